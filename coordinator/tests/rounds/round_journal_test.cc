#include "flotilla/coordinator/round_journal.h"

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/core/sqlite.h"

namespace flotilla::rounds {
namespace {

class RoundJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("journal-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(*dir));
    Reopen();
  }
  void Reopen() {
    journal_.reset();
    auto j = SqliteRoundJournal::Open(dir_->path() / "j.db");
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    journal_ = std::move(*j);
  }
  std::optional<TempDir> dir_;
  std::unique_ptr<SqliteRoundJournal> journal_;
};

TEST_F(RoundJournalTest, TransitionsAreCompareAndSetAndSurviveReopen) {
  ASSERT_TRUE(journal_->Create({"r1", "g", RoundState::kCreated, "", "{}", 10, 10, "", {}}).ok());
  EXPECT_EQ(journal_->Create({"r1", "g", RoundState::kCreated, "", "{}", 10, 10, "", {}}).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(journal_->Transition("r1", RoundState::kCreated, RoundState::kSelecting, "", {}).ok());
  // Wrong `from`: nothing is written.
  ParticipantStage p{"d1", 1, "selected", "ok"};
  EXPECT_EQ(journal_->Transition("r1", RoundState::kCreated, RoundState::kTraining, "", {&p, 1}).code(),
            StatusCode::kAborted);
  EXPECT_TRUE(journal_->Participants("r1")->empty());
  std::vector<ParticipantStage> cohort = {{"d1", 1, "selected", "ok"}, {"d2", 2, "selected", "ok"}};
  ASSERT_TRUE(journal_->Transition("r1", RoundState::kSelecting, RoundState::kTraining, "", cohort).ok());
  std::vector<ParticipantStage> stage = {{"d1", 1, "advertise_keys", "ok"}, {"d2", 2, "advertise_keys", "dropped"}};
  ASSERT_TRUE(journal_->Transition("r1", RoundState::kTraining, RoundState::kShareKeys, "", stage).ok());
  Reopen();
  auto r = journal_->Get("r1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, RoundState::kShareKeys);
  auto parts = journal_->Participants("r1");
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[1].device_id, "d2");
  EXPECT_EQ((*parts)[1].last_stage, "advertise_keys");
  EXPECT_EQ((*parts)[1].last_status, "dropped");
  auto stages = journal_->Stages("r1", "d1");
  ASSERT_TRUE(stages.ok());
  ASSERT_EQ(stages->size(), 2u);
  EXPECT_EQ((*stages)[0].stage, "selected");
  auto unfinished = journal_->ListUnfinished();
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 1u);
  ASSERT_TRUE(journal_->Transition("r1", RoundState::kShareKeys, RoundState::kFailed, "too few", {}).ok());
  EXPECT_TRUE(journal_->ListUnfinished()->empty());
  EXPECT_EQ(journal_->Get("r1")->reason, "too few");
  EXPECT_TRUE(journal_->CheckInvariants().ok());
  EXPECT_EQ(journal_->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(RoundJournalTest, InvariantCheckFindsViolations) {
  ASSERT_TRUE(journal_->Create({"r2", "g", RoundState::kCreated, "", "{}", 10, 10, "", {}}).ok());
  ASSERT_TRUE(journal_->CheckInvariants().ok());
  journal_.reset();
  {
    auto db = sqlite::Database::Open(dir_->path() / "j.db");
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("UPDATE round_journal SET state = 'failed', reason = '' WHERE id = 'r2'").ok());
  }
  Reopen();
  Status s = journal_->CheckInvariants();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("without a reason"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace flotilla::rounds
