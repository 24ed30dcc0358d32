// Store: schema/migrations, devices, tokens, rounds, participants, uploads, registry,
// audit immutability, counters. Real SQLite files in a temp dir.
#include "flotilla/coordinator/store.h"

#include <gtest/gtest.h>

#include <set>

#include "flotilla/core/file.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/core/testing/fake_clock.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;
using testutil::StoreFixture;

TEST_F(StoreFixture, OpenAppliesEveryMigrationAndReopenIsIdempotent) {
  EXPECT_EQ(Must(store_->SchemaVersion()), kStoreSchemaVersion);
  ASSERT_TRUE(store_->IntegrityCheck().ok());
  Enrol("dev-1");
  store_.reset();
  for (int i = 0; i < 2; ++i) {
    auto again = Store::Open(dir_.path(), {&clock_, nullptr, true});
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(Must((*again)->SchemaVersion()), kStoreSchemaVersion);
    EXPECT_EQ(Must((*again)->GetDevice("dev-1")).id, "dev-1");  // data survived
  }
}

TEST_F(StoreFixture, RefusesAFileWrittenByANewerSchema) {
  store_.reset();
  {
    auto db = Must(sqlite::Database::Open(dir_.path() / "coordinator.db"));
    ASSERT_TRUE(db->Exec("PRAGMA user_version = " + std::to_string(kStoreSchemaVersion + 1)).ok());
  }
  auto s = Store::Open(dir_.path());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(StoreFixture, AuditLogIsAppendOnly) {
  ASSERT_TRUE(store_->AppendAudit("cli", "test.action", "x", R"({"k":1})").ok());
  auto entries = Must(store_->ListAudit(0, 10));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].action, "test.action");
  store_.reset();
  auto db = Must(sqlite::Database::Open(dir_.path() / "coordinator.db"));
  Status update = db->Exec("UPDATE audit_log SET actor = 'evil'");
  Status remove = db->Exec("DELETE FROM audit_log");
  EXPECT_FALSE(update.ok());
  EXPECT_NE(update.message().find("append-only"), std::string::npos) << update.ToString();
  EXPECT_FALSE(remove.ok());
  auto st = Must(db->Prepare("SELECT count(*), min(actor) FROM audit_log"));
  ASSERT_TRUE(Must(st.Step()));
  EXPECT_EQ(st.ColumnInt(0), 1);
  EXPECT_EQ(st.ColumnText(1), "cli");
}

TEST_F(StoreFixture, EnrolByCertificateIsIdempotentAndRefusesAnotherKey) {
  DeviceRecord d = Enrol("dev-1", Key(1), "CERT");
  EXPECT_EQ(d.status, DeviceStatus::kActive);
  EXPECT_EQ(d.certificate_pem, "CERT");
  const size_t audits = Must(store_->ListAudit(0, 100)).size();
  Enrol("dev-1", Key(1), "CERT");  // QoS 1 redelivery
  EXPECT_EQ(Must(store_->ListAudit(0, 100)).size(), audits);
  EnrolDeviceRequest other = Request("dev-1", Key(2));
  auto r = store_->EnrolDevice(other, "test");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).identity_public_key, Key(1));
}

TEST_F(StoreFixture, RevokedDeviceCannotEnrolAgainEvenWithAToken) {
  Enrol("dev-1");
  ASSERT_TRUE(store_->RevokeDevice("dev-1", "stolen", "cli").ok());
  ASSERT_TRUE(store_->RevokeDevice("dev-1", "again", "cli").ok());
  DeviceRecord d = Must(store_->GetDevice("dev-1"));
  EXPECT_EQ(d.status, DeviceStatus::kRevoked);
  EXPECT_EQ(d.revoked_reason, "stolen");
  auto token = Must(store_->CreateEnrolmentToken("dev-1", {}, std::chrono::hours(1), "cli"));
  EnrolDeviceRequest req = Request("dev-1", Key(1));
  req.enrolment_token = token.token;
  auto r = store_->EnrolDevice(req, "test");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  // The refused enrolment did not consume the token.
  EXPECT_EQ(Must(store_->ListEnrolmentTokens())[0].used_ms, 0);
  EXPECT_EQ(store_->RevokeDevice("nobody", "", "cli").code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, EnrolmentTokenIsOneTimeExpiresAndIsBoundToItsDevice) {
  const std::vector<std::string> groups = {"canary", "eu"};
  auto t = Must(store_->CreateEnrolmentToken("", groups, std::chrono::minutes(10), "cli"));
  EXPECT_EQ(t.token.substr(0, 4), "fle_");
  EnrolDeviceRequest req = Request("dev-1", Key(1));
  req.enrolment_token = t.token;
  req.require_token = true;
  DeviceRecord d = Must(store_->EnrolDevice(req, "test"));
  EXPECT_EQ(d.groups, groups);
  auto list = Must(store_->ListEnrolmentTokens());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].used_by, "dev-1");

  // Second use, by another device.
  EnrolDeviceRequest reuse = Request("dev-2", Key(2));
  reuse.enrolment_token = t.token;
  EXPECT_EQ(store_->EnrolDevice(reuse, "test").status().code(), StatusCode::kPermissionDenied);

  // Bound to another id.
  auto bound = Must(store_->CreateEnrolmentToken("dev-3", {}, std::chrono::minutes(10), "cli"));
  EnrolDeviceRequest wrong = Request("dev-2", Key(2));
  wrong.enrolment_token = bound.token;
  EXPECT_EQ(store_->EnrolDevice(wrong, "test").status().code(), StatusCode::kPermissionDenied);

  // Expired.
  auto expiring = Must(store_->CreateEnrolmentToken("", {}, std::chrono::seconds(30), "cli"));
  clock_.Advance(std::chrono::seconds(31));
  EnrolDeviceRequest late = Request("dev-2", Key(2));
  late.enrolment_token = expiring.token;
  EXPECT_EQ(store_->EnrolDevice(late, "test").status().code(), StatusCode::kPermissionDenied);

  // Tampered secret with a valid id.
  std::string tampered = bound.token;
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  EnrolDeviceRequest forged = Request("dev-3", Key(3));
  forged.enrolment_token = tampered;
  EXPECT_EQ(store_->EnrolDevice(forged, "test").status().code(), StatusCode::kPermissionDenied);

  // Policy requires a token.
  EnrolDeviceRequest none = Request("dev-4", Key(4));
  none.require_token = true;
  EXPECT_EQ(store_->EnrolDevice(none, "test").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->GetDevice("dev-4").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, RekeyNeedsATokenBoundToTheDevice) {
  Enrol("dev-1", Key(1));
  auto any = Must(store_->CreateEnrolmentToken("", {}, std::chrono::minutes(10), "cli"));
  EnrolDeviceRequest r1 = Request("dev-1", Key(2));
  r1.enrolment_token = any.token;
  EXPECT_EQ(store_->EnrolDevice(r1, "test").status().code(), StatusCode::kAlreadyExists);
  auto bound = Must(store_->CreateEnrolmentToken("dev-1", {}, std::chrono::minutes(10), "cli"));
  EnrolDeviceRequest r2 = Request("dev-1", Key(2));
  r2.enrolment_token = bound.token;
  EXPECT_EQ(Must(store_->EnrolDevice(r2, "test")).identity_public_key, Key(2));
}

TEST_F(StoreFixture, GroupsAndListingFilters) {
  for (int i = 0; i < 5; ++i) Enrol("dev-" + std::to_string(i));
  const std::vector<std::string> g = {"eu", "canary", "eu"};
  ASSERT_TRUE(store_->SetDeviceGroups("dev-1", g, "cli").ok());
  ASSERT_TRUE(store_->SetDeviceGroups("dev-2", std::vector<std::string>{"eu"}, "cli").ok());
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).groups, (std::vector<std::string>{"canary", "eu"}));
  EXPECT_EQ(Must(store_->ListGroups()), (std::vector<std::string>{"canary", "eu"}));
  DeviceFilter f;
  f.group = "eu";
  auto eu = Must(store_->ListDevices(f));
  ASSERT_EQ(eu.size(), 2u);
  EXPECT_EQ(eu[0].id, "dev-1");
  EXPECT_EQ(store_->SetDeviceGroups("dev-1", std::vector<std::string>{"bad/name"}, "cli").code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->SetDeviceGroups("ghost", g, "cli").code(), StatusCode::kNotFound);
  // Keyset pagination visits every device once.
  std::set<std::string> seen;
  DeviceFilter page;
  page.limit = 2;
  for (;;) {
    auto batch = Must(store_->ListDevices(page));
    for (const auto& d : batch) EXPECT_TRUE(seen.insert(d.id).second);
    if (batch.size() < 2) break;
    page.after_id = batch.back().id;
  }
  EXPECT_EQ(seen.size(), 5u);
}

TEST_F(StoreFixture, PresenceIgnoresAStaleWillOfAnOldSession) {
  Enrol("dev-1");
  EXPECT_TRUE(Must(store_->SetPresence("dev-1", PresenceState::kOnline, "s1", 1000)));
  EXPECT_TRUE(Must(store_->SetPresence("dev-1", PresenceState::kOnline, "s2", 2000)) == false);  // still online
  // The Will of session s1 arrives late: ignored.
  EXPECT_FALSE(Must(store_->SetPresence("dev-1", PresenceState::kOffline, "s1", 1500)));
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOnline);
  EXPECT_EQ(Must(store_->CountDevices(PresenceState::kOnline, DeviceStatus::kActive)), 1);
  EXPECT_TRUE(Must(store_->SetPresence("dev-1", PresenceState::kOffline, "s2", 2500)));
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOffline);
  EXPECT_EQ(store_->SetPresence("ghost", PresenceState::kOnline, "s", 1).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, ReportedStateKeepsTheNewest) {
  Enrol("dev-1");
  ASSERT_TRUE(store_->SetReportedState("dev-1", AsBytes("new"), 200).ok());
  ASSERT_TRUE(store_->SetReportedState("dev-1", AsBytes("old"), 100).ok());
  DeviceRecord d = Must(store_->GetDevice("dev-1"));
  EXPECT_EQ(AsStringView(d.reported_state), "new");
  EXPECT_EQ(d.reported_ms, 200);
  EXPECT_EQ(store_->SetReportedState("ghost", AsBytes("x"), 1).code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, ApiTokensAreHashedScopedAndRevocable) {
  const std::vector<std::string> scopes = {"read"};
  auto t = Must(store_->CreateApiToken("grafana", scopes, "cli"));
  EXPECT_EQ(t.token.substr(0, 4), "flt_");
  ApiTokenRecord r = Must(store_->AuthenticateApiToken(t.token));
  EXPECT_EQ(r.name, "grafana");
  EXPECT_TRUE(r.HasScope("read"));
  EXPECT_FALSE(r.HasScope("admin"));
  // Only the hash is stored.
  store_.reset();
  {
    auto db = Must(sqlite::Database::Open(dir_.path() / "coordinator.db"));
    auto st = Must(db->Prepare("SELECT sha256 FROM api_tokens"));
    ASSERT_TRUE(Must(st.Step()));
    EXPECT_EQ(st.ColumnText(0).size(), 64u);
    EXPECT_EQ(t.token.find(st.ColumnText(0)), std::string::npos);
  }
  store_ = Must(Store::Open(dir_.path(), {&clock_, nullptr, true}));
  std::string wrong = t.token;
  wrong[wrong.size() - 1] = wrong.back() == 'a' ? 'b' : 'a';
  EXPECT_EQ(store_->AuthenticateApiToken(wrong).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->AuthenticateApiToken("garbage").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->AuthenticateApiToken("").status().code(), StatusCode::kUnauthenticated);
  ASSERT_TRUE(store_->RevokeApiToken(r.id, "cli").ok());
  EXPECT_EQ(store_->AuthenticateApiToken(t.token).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(Must(store_->ListApiTokens())[0].revoked);
  const std::vector<std::string> bad = {"root"};
  EXPECT_EQ(store_->CreateApiToken("x", bad, "cli").status().code(), StatusCode::kInvalidArgument);
  auto admin = Must(store_->CreateApiToken("ops", std::vector<std::string>{"admin"}, "cli"));
  EXPECT_TRUE(Must(store_->AuthenticateApiToken(admin.token)).HasScope("rounds"));
}

TEST_F(StoreFixture, RoundTransitionsAreCompareAndSetAndAudited) {
  NewRound nr;
  nr.group = "eu";
  nr.config_json = R"({"rank":4})";
  RoundRecord r = Must(store_->CreateRound(nr, "api:x"));
  EXPECT_EQ(r.state, RoundState::kCreated);
  EXPECT_EQ(r.id.substr(0, 2), "r-");
  EXPECT_EQ(r.config_json, R"({"rank":4})");
  ASSERT_TRUE(store_->TransitionRound(r.id, RoundState::kCreated, RoundState::kSelecting, "", "engine").ok());
  // A stale writer loses.
  EXPECT_EQ(store_->TransitionRound(r.id, RoundState::kCreated, RoundState::kTraining, "", "engine").code(),
            StatusCode::kAborted);
  ASSERT_TRUE(store_->SetRoundDeadline(r.id, "advertise_keys", 12345).ok());
  ASSERT_TRUE(store_->RequestCancelRound(r.id, "operator said so", "api:x").ok());
  RoundRecord got = Must(store_->GetRound(r.id));
  EXPECT_TRUE(got.cancel_requested);
  EXPECT_EQ(got.deadlines_ms.at("advertise_keys"), 12345);
  ASSERT_TRUE(store_->TransitionRound(r.id, RoundState::kSelecting, RoundState::kCancelled, "operator said so", "engine").ok());
  EXPECT_EQ(store_->TransitionRound(r.id, RoundState::kCancelled, RoundState::kTraining, "", "engine").code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->RequestCancelRound(r.id, "", "api").code(), StatusCode::kFailedPrecondition);
  auto counts = Must(store_->CountRoundsByState());
  EXPECT_EQ(counts[RoundState::kCancelled], 1);
  EXPECT_EQ(counts[RoundState::kCreated], 0);
  EXPECT_EQ(counts.size(), AllRoundStates().size());
  int transitions = 0;
  for (const auto& e : Must(store_->ListAudit(0, 100))) transitions += e.action == "round.state";
  EXPECT_EQ(transitions, 2);
  NewRound dup;
  dup.id = r.id;
  EXPECT_EQ(store_->CreateRound(dup, "api").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(Must(store_->ListRounds(RoundState::kCancelled)).size(), 1u);
  EXPECT_EQ(Must(store_->ListRounds(RoundState::kTraining)).size(), 0u);
}

TEST_F(StoreFixture, ParticipantsCountPerStage) {
  for (int i = 1; i <= 4; ++i) Enrol("dev-" + std::to_string(i));
  RoundRecord r = Must(store_->CreateRound({}, "engine"));
  std::vector<std::pair<std::string, uint32_t>> cohort = {{"dev-1", 1}, {"dev-2", 2}, {"dev-3", 3}};
  ASSERT_TRUE(store_->AddParticipants(r.id, cohort).ok());
  std::vector<std::pair<std::string, uint32_t>> again = {{"dev-4", 4}, {"dev-1", 5}};
  EXPECT_EQ(store_->AddParticipants(r.id, again).code(), StatusCode::kAlreadyExists);
  EXPECT_FALSE(Must(store_->IsParticipant(r.id, "dev-4")));  // the failed batch left nothing behind
  std::vector<std::pair<std::string, uint32_t>> unknown = {{"ghost", 9}};
  EXPECT_FALSE(store_->AddParticipants(r.id, unknown).ok());
  std::vector<StageUpdate> ups = {{"dev-1", "advertise_keys", "ok"},
                                  {"dev-2", "advertise_keys", "ok"},
                                  {"dev-3", "advertise_keys", "dropped"},
                                  {"dev-1", "share_keys", "ok"}};
  ASSERT_TRUE(store_->SetParticipantStages(r.id, ups).ok());
  std::vector<StageUpdate> bad = {{"dev-1", "unmask", "ok"}, {"dev-4", "unmask", "ok"}};
  EXPECT_EQ(store_->SetParticipantStages(r.id, bad).code(), StatusCode::kNotFound);
  StageCounts c = Must(store_->CountParticipantsByStage(r.id));
  EXPECT_EQ(c["advertise_keys"]["ok"], 2);
  EXPECT_EQ(c["advertise_keys"]["dropped"], 1);
  EXPECT_EQ(c["share_keys"]["ok"], 1);
  EXPECT_EQ(c.count("unmask"), 0u);  // the failed batch rolled back
  auto list = Must(store_->ListParticipants(r.id));
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(Must(store_->CountParticipants(r.id)), 3);
  EXPECT_EQ(Must(store_->CountParticipants("no-such-round")), 0);
  EXPECT_EQ(list[0].cohort_index, 1u);
  EXPECT_EQ(list[0].stages.at("share_keys"), "ok");
  ASSERT_TRUE(store_->IntegrityCheck().ok());
}

TEST_F(StoreFixture, UploadTokensAreBoundToRoundAndDevice) {
  RoundRecord r1 = Must(store_->CreateRound({}, "engine"));
  RoundRecord r2 = Must(store_->CreateRound({}, "engine"));
  const std::string t = Must(store_->UploadToken(r1.id, "dev-1"));
  EXPECT_TRUE(store_->VerifyUploadToken(r1.id, "dev-1", t).ok());
  EXPECT_EQ(store_->VerifyUploadToken(r1.id, "dev-2", t).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->VerifyUploadToken(r2.id, "dev-1", t).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->VerifyUploadToken(r1.id, "dev-1", "").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->VerifyUploadToken("nope", "dev-1", t).code(), StatusCode::kNotFound);
  EXPECT_NE(Must(store_->UploadToken(r2.id, "dev-1")), t);
}

TEST_F(StoreFixture, UploadsAreRecordedOncePerDevice) {
  RoundRecord r = Must(store_->CreateRound({}, "engine"));
  ArtifactInfo a = Must(store_->PutArtifact(AsBytes("box-a"), "x"));
  ArtifactInfo b = Must(store_->PutArtifact(AsBytes("box-b"), "x"));
  ASSERT_TRUE(store_->RecordUpload({r.id, "dev-1", a.sha256, a.size, 0}).ok());
  ASSERT_TRUE(store_->RecordUpload({r.id, "dev-1", a.sha256, a.size, 0}).ok());  // retry
  EXPECT_EQ(store_->RecordUpload({r.id, "dev-1", b.sha256, b.size, 0}).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(AsStringView(Must(store_->ReadUpload(r.id, "dev-1", 1 << 20))), "box-a");
  EXPECT_EQ(store_->ReadUpload(r.id, "dev-2", 1 << 20).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, VersionsKeepLineageAndNeedTheirArtifact) {
  ArtifactInfo base = Must(store_->PutArtifact(AsBytes("base weights"), "application/x-gguf"));
  ArtifactInfo a1 = Must(store_->PutArtifact(AsBytes("adapter 1"), "application/x-gguf"));
  ArtifactInfo a2 = Must(store_->PutArtifact(AsBytes("adapter 2"), "application/x-gguf"));
  VersionRecord m{"base-1", "base", "", "", "", base.sha256, 0, R"({"ppl":12.5})", 0};
  ASSERT_TRUE(store_->AddVersion(VersionKind::kModel, m, "cli").ok());
  EXPECT_EQ(store_->AddVersion(VersionKind::kModel, m, "cli").code(), StatusCode::kAlreadyExists);
  VersionRecord v1{"adapter-1", "lora-frozen-a", "", "base-1", "r-1", a1.sha256, 0, "{}", 0};
  VersionRecord v2{"adapter-2", "lora-frozen-a", "adapter-1", "base-1", "r-2", a2.sha256, 0, "{}", 0};
  ASSERT_TRUE(store_->AddVersion(VersionKind::kAdapter, v1, "engine").ok());
  clock_.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(store_->AddVersion(VersionKind::kAdapter, v2, "engine").ok());
  auto lineage = Must(store_->Lineage(VersionKind::kAdapter, "adapter-2"));
  ASSERT_EQ(lineage.size(), 2u);
  EXPECT_EQ(lineage[1].id, "adapter-1");
  EXPECT_EQ(lineage[0].size, a2.size);
  EXPECT_EQ(Must(store_->ListVersions(VersionKind::kAdapter))[0].id, "adapter-2");  // newest first
  VersionRecord orphan{"adapter-3", "x", "nope", "", "", a2.sha256, 0, "{}", 0};
  EXPECT_EQ(store_->AddVersion(VersionKind::kAdapter, orphan, "x").code(), StatusCode::kNotFound);
  VersionRecord no_blob{"adapter-4", "x", "", "", "", std::string(64, 'a'), 0, "{}", 0};
  EXPECT_EQ(store_->AddVersion(VersionKind::kAdapter, no_blob, "x").code(), StatusCode::kFailedPrecondition);
  VersionRecord wrong_base{"adapter-5", "x", "", "base-9", "", a2.sha256, 0, "{}", 0};
  EXPECT_EQ(store_->AddVersion(VersionKind::kAdapter, wrong_base, "x").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetVersion(VersionKind::kModel, "adapter-1").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreFixture, CountersAccumulateAcrossReopen) {
  ASSERT_TRUE(store_->AddCounters({{"bytes_in_total", 10}}).ok());
  ASSERT_TRUE(store_->AddCounters({{"bytes_in_total", 5}, {"bytes_out_total", 1}}).ok());
  store_.reset();
  store_ = Must(Store::Open(dir_.path(), {&clock_, nullptr, true}));
  auto c = Must(store_->Counters());
  EXPECT_EQ(c["bytes_in_total"], 15);
  EXPECT_EQ(c["bytes_out_total"], 1);
}

TEST(RoundStateTest, NamesRoundTrip) {
  for (RoundState s : AllRoundStates()) EXPECT_EQ(Must(ParseRoundState(ToString(s))), s);
  EXPECT_FALSE(ParseRoundState("bogus").ok());
  EXPECT_TRUE(IsTerminal(RoundState::kFailed));
  EXPECT_FALSE(IsTerminal(RoundState::kUnmask));
}

}  // namespace
}  // namespace flotilla::coordinator
