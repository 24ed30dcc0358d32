// StoreRoundJournal and StoreAdapterRegistry: the round engine's journal and adapter
// registry inside coordinator.db (adoption of queued REST rounds, compare-and-set
// transitions, one transaction per transition, invariants), and upload purging.
#include "flotilla/coordinator/store_round_journal.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "flotilla/coordinator/store_adapter_registry.h"
#include "flotilla/protocol/adapter_vector.h"
#include "flotilla/security/hash.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using rounds::JournalRound;
using rounds::ParticipantStage;
using rounds::RoundState;
using testutil::Must;

class StoreRoundJournalTest : public testutil::StoreFixture {
 protected:
  StoreRoundJournalTest() : journal_(*store_) {}

  static JournalRound Engine(const std::string& id, const std::string& group = "g") {
    JournalRound r;
    r.id = id;
    r.group = group;
    r.spec_json = R"({"group":")" + group + R"("})";
    return r;
  }

  size_t AuditCount() { return Must(store_->ListAudit(0, 10000)).size(); }

  StoreRoundJournal journal_;
};

TEST_F(StoreRoundJournalTest, CreateAdoptsAQueuedRestRoundButNothingElse) {
  NewRound nr;
  nr.id = "r-rest";
  nr.group = "g";
  nr.config_json = R"({"min_cohort": 2})";
  Must(store_->CreateRound(nr, "api:x"));
  EXPECT_EQ(Must(store_->ListQueuedRounds()).size(), 1u);
  EXPECT_TRUE(Must(journal_.ListUnfinished()).empty());  // the queue is not the engine's yet

  ASSERT_TRUE(journal_.Create(Engine("r-rest")).ok());
  const JournalRound j = Must(journal_.Get("r-rest"));
  EXPECT_EQ(j.state, RoundState::kCreated);
  EXPECT_EQ(j.spec_json, R"({"group":"g"})");
  EXPECT_EQ(Must(store_->GetRound("r-rest")).config_json, R"({"min_cohort": 2})");  // the REST view keeps its config
  EXPECT_TRUE(Must(store_->ListQueuedRounds()).empty());
  ASSERT_EQ(Must(journal_.ListUnfinished()).size(), 1u);
  EXPECT_EQ(Must(store_->ListAudit(0, 100)).back().action, "round.adopt");

  // Adopted once: a second Create, or one for a round that moved on, is refused.
  EXPECT_EQ(journal_.Create(Engine("r-rest")).code(), StatusCode::kAlreadyExists);
  nr.id = "r-moved";
  Must(store_->CreateRound(nr, "api:x"));
  ASSERT_TRUE(store_->TransitionRound("r-moved", RoundState::kCreated, RoundState::kCancelled, "operator", "api").ok());
  EXPECT_EQ(journal_.Create(Engine("r-moved")).code(), StatusCode::kAlreadyExists);
  // A brand-new id is created with its spec.
  ASSERT_TRUE(journal_.Create(Engine("r-new", "h")).ok());
  EXPECT_EQ(Must(journal_.Get("r-new")).group, "h");
}

TEST_F(StoreRoundJournalTest, TransitionIsACompareAndSet) {
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  EXPECT_EQ(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).code(),
            StatusCode::kAborted);
  EXPECT_EQ(Must(journal_.Get("r1")).state, RoundState::kSelecting);
  EXPECT_EQ(journal_.Transition("nope", RoundState::kCreated, RoundState::kSelecting, "", {}).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(journal_.Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreRoundJournalTest, TransitionWritesParticipantsInOrderWithAnAuditEntry) {
  Enrol("d1");
  Enrol("d2", Key(2));
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  const std::vector<ParticipantStage> selected = {{"d1", 1, "selected", "ok"}, {"d2", 2, "selected", "ok"}};
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kSelecting, RoundState::kTraining, "", selected).ok());
  const std::vector<ParticipantStage> keys = {{"d1", 1, "advertise_keys", "ok"}, {"d2", 2, "advertise_keys", "dropped"}};
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kTraining, RoundState::kShareKeys, "", keys).ok());

  const auto parts = Must(journal_.Participants("r1"));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].device_id, "d1");
  EXPECT_EQ(parts[0].cohort_index, 1u);
  EXPECT_EQ(parts[0].last_stage, "advertise_keys");
  EXPECT_EQ(parts[1].last_status, "dropped");
  const auto stages = Must(journal_.Stages("r1", "d2"));
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0].stage, "selected");  // commit order, not alphabetical
  EXPECT_EQ(stages[1].stage, "advertise_keys");
  // The REST view counts the same rows.
  const StageCounts counts = Must(store_->CountParticipantsByStage("r1"));
  EXPECT_EQ(counts.at("advertise_keys").at("dropped"), 1);
  EXPECT_EQ(counts.at("selected").at("ok"), 2);
  const auto audit = Must(store_->ListAudit(0, 100));
  EXPECT_EQ(audit.back().action, "round.state");
  EXPECT_NE(audit.back().detail_json.find("share_keys"), std::string::npos);
  EXPECT_TRUE(journal_.CheckInvariants().ok());
}

TEST_F(StoreRoundJournalTest, AFailingTransitionWritesNothing) {
  Enrol("d1");
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  const size_t audit_before = AuditCount();
  // "ghost" is not an enrolled device: its participant row breaks a foreign key after
  // d1's row, the state and the audit entry were written in the same transaction.
  const std::vector<ParticipantStage> rows = {{"d1", 1, "selected", "ok"}, {"ghost", 2, "selected", "ok"}};
  EXPECT_FALSE(journal_.Transition("r1", RoundState::kSelecting, RoundState::kTraining, "", rows).ok());
  EXPECT_EQ(Must(journal_.Get("r1")).state, RoundState::kSelecting);
  EXPECT_TRUE(Must(journal_.Participants("r1")).empty());
  EXPECT_EQ(AuditCount(), audit_before);
  // An adapter result whose artifact the store does not hold is refused the same way.
  const std::string version = "adapter-r1";
  const Bytes sha(32, 0x11);
  EXPECT_FALSE(journal_.Transition("r1", RoundState::kSelecting, RoundState::kFailed, "x", {}, &version, &sha).ok());
  EXPECT_EQ(Must(journal_.Get("r1")).state, RoundState::kSelecting);
  EXPECT_TRUE(journal_.CheckInvariants().ok());
}

TEST_F(StoreRoundJournalTest, CommitHookSeesEachStateAfterItsCommit) {
  std::vector<std::pair<RoundState, RoundState>> seen;  // (entered, state in the store then)
  journal_.SetCommitHook([&](RoundState s) { seen.emplace_back(s, Must(store_->GetRound("r1")).state); });
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  EXPECT_FALSE(journal_.Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  ASSERT_EQ(seen.size(), 2u);  // not for the refused transition
  EXPECT_EQ(seen[0].first, RoundState::kCreated);
  EXPECT_EQ(seen[1].first, RoundState::kSelecting);
  EXPECT_EQ(seen[1].second, RoundState::kSelecting);
}

TEST_F(StoreRoundJournalTest, InvariantsNameTheViolation) {
  ASSERT_TRUE(journal_.CheckInvariants().ok());
  // Two running engine rounds in one group.
  ASSERT_TRUE(journal_.Create(Engine("a")).ok());
  ASSERT_TRUE(journal_.Create(Engine("b")).ok());
  Status s = journal_.CheckInvariants();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("more than one running engine round"), std::string::npos) << s.ToString();
  // A failed round without a reason.
  ASSERT_TRUE(journal_.Transition("b", RoundState::kCreated, RoundState::kFailed, "", {}).ok());
  s = journal_.CheckInvariants();
  EXPECT_NE(s.message().find("without a reason"), std::string::npos) << s.ToString();
}

TEST_F(StoreRoundJournalTest, AggregatedRoundsNeedAnAdapterVersionOfTheRegistry) {
  auto registry = Must(StoreAdapterRegistry::Open(*store_, {"http://coord:1", 4}));
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  for (auto [from, to] : {std::pair{RoundState::kCreated, RoundState::kSelecting},
                          {RoundState::kSelecting, RoundState::kTraining}, {RoundState::kTraining, RoundState::kShareKeys},
                          {RoundState::kShareKeys, RoundState::kMaskedInput}, {RoundState::kMaskedInput, RoundState::kUnmask}}) {
    ASSERT_TRUE(journal_.Transition("r1", from, to, "", {}).ok());
  }
  const std::vector<float> next = {1, 2, 3, 4};
  const rounds::GlobalAdapter a = Must(registry->Put("r1", "", next, {}));
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kUnmask, RoundState::kAggregated, "", {}, &a.version, &a.sha256).ok());
  const JournalRound j = Must(journal_.Get("r1"));
  EXPECT_EQ(j.adapter_version, "adapter-r1");
  EXPECT_EQ(j.adapter_sha256, a.sha256);
  EXPECT_TRUE(journal_.CheckInvariants().ok());
  // The same round published with its version gone from the registry would be reported.
  ASSERT_TRUE(journal_.Transition("r1", RoundState::kAggregated, RoundState::kPublished, "", {}).ok());
  EXPECT_TRUE(journal_.CheckInvariants().ok());
  EXPECT_TRUE(Must(journal_.ListUnfinished()).empty());
}

TEST_F(StoreRoundJournalTest, AdapterRegistryKeepsLineageAndContentAddressedUrls) {
  auto registry = Must(StoreAdapterRegistry::Open(*store_, {"http://coord:8080/", 3}));
  const rounds::GlobalAdapter initial = Must(registry->Current());
  EXPECT_EQ(initial.version, "");
  EXPECT_EQ(initial.values, std::vector<float>(3, 0.0f));

  const std::vector<float> v1 = {0.5f, -1, 2};
  const rounds::GlobalAdapter a1 = Must(registry->Put("r1", "", v1, {10, 8, 120.0, 5000, 0.25}));
  EXPECT_EQ(Must(registry->Current()).version, "");  // not current until SetCurrent
  const auto stored = nlohmann::json::parse(Must(store_->GetVersion(VersionKind::kAdapter, a1.version)).metrics_json);
  EXPECT_EQ(stored["length"], 3);
  EXPECT_EQ(stored["cohort"], 10);
  EXPECT_EQ(stored["survivors"], 8);
  EXPECT_EQ(stored["examples"], 120.0);
  EXPECT_EQ(stored["duration_ms"], 5000);
  EXPECT_EQ(stored["l2_norm_delta"], 0.25);
  ASSERT_TRUE(registry->SetCurrent(a1.version).ok());
  const rounds::GlobalAdapter cur = Must(registry->Current());
  EXPECT_EQ(cur.version, "adapter-r1");
  EXPECT_EQ(cur.values, v1);
  const std::string hex = ToHex(cur.sha256);
  EXPECT_EQ(cur.url, "http://coord:8080/api/v1/artifacts/sha256/" + hex);
  EXPECT_EQ(Must(registry->ReadUrl(cur.url)), protocol::EncodeAdapterVector(v1));
  EXPECT_EQ(ToHex(security::Sha256(Must(registry->ReadUrl(cur.url)))), hex);

  const std::vector<float> v2 = {1, 1, 1};
  const rounds::GlobalAdapter a2 = Must(registry->Put("r2", a1.version, v2, {}));
  EXPECT_EQ(Must(registry->Put("r2", a1.version, v1, {})).sha256, a2.sha256);  // idempotent per round
  const auto lineage = Must(store_->Lineage(VersionKind::kAdapter, a2.version));
  ASSERT_EQ(lineage.size(), 2u);
  EXPECT_EQ(lineage[1].id, "adapter-r1");
  EXPECT_EQ(lineage[0].round_id, "r2");
  EXPECT_EQ(Must(store_->CurrentVersion(VersionKind::kAdapter)), "adapter-r1");
  EXPECT_EQ(registry->SetCurrent("adapter-none").code(), StatusCode::kNotFound);
  // Only versions' artifacts are reachable by URL.
  const ArtifactInfo other = Must(store_->PutArtifact(AsBytes(std::string("secret")), ""));
  EXPECT_EQ(registry->ReadUrl("http://coord:8080/api/v1/artifacts/sha256/" + other.sha256).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(registry->ReadUrl("http://elsewhere/x").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreRoundJournalTest, UploadsArePurgedWhenTheirRoundEnds) {
  Enrol("d1");
  ASSERT_TRUE(journal_.Create(Engine("r1")).ok());
  const ArtifactInfo box = Must(store_->PutArtifact(AsBytes(std::string("sealed box bytes")), ""));
  ASSERT_TRUE(store_->RecordUpload({"r1", "d1", box.sha256, box.size, 0}).ok());
  EXPECT_EQ(Must(store_->PurgeFinishedRoundUploads()), 0);  // the round still runs
  EXPECT_TRUE(store_->artifacts().Contains(box.sha256));

  ASSERT_TRUE(journal_.Transition("r1", RoundState::kCreated, RoundState::kFailed, "test", {}).ok());
  EXPECT_EQ(Must(store_->PurgeFinishedRoundUploads()), 1);
  EXPECT_FALSE(store_->artifacts().Contains(box.sha256));
  EXPECT_EQ(store_->GetUpload("r1", "d1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetArtifact(box.sha256).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Must(store_->PurgeFinishedRoundUploads()), 0);
  EXPECT_TRUE(journal_.CheckInvariants().ok());
}

}  // namespace
}  // namespace flotilla::coordinator
