#include "flotilla/simulator/report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "fleet_parts.h"
#include "flotilla/core/file.h"

namespace flotilla::simulator {
namespace {

SimulationReport Sample() {
  SimulationReport r;
  r.devices = 10;
  r.rounds_requested = 2;
  r.cohort = 5;
  r.trainer = "engine";
  r.initial_eval = PerplexityStats{10, 40.0, 30.0, 50.0, 41.0, 3.7, 1000, 12};
  RoundReport a;
  a.number = 1;
  a.round_id = "r1";
  a.state = "published";
  a.cohort = 5;
  a.survivors = 4;
  a.stages.push_back({"advertise_keys", 120, 4, 5});
  a.drops["share_keys"] = 1;
  a.eval = PerplexityStats{10, 30.0, 20.0, 45.0, 31.0, 3.4, 1000, 10};
  r.rounds.push_back(a);
  RoundReport b;
  b.number = 2;
  b.state = "failed";
  b.reason = "too few survivors";
  r.rounds.push_back(b);
  return r;
}

TEST(ReportTest, JsonHasEveryRoundAndItsFields) {
  const nlohmann::json j = nlohmann::json::parse(ReportToJson(Sample()));
  EXPECT_EQ(j["schema"], "flotilla.simulate.v1");
  EXPECT_EQ(j["parameters"]["devices"], 10);
  EXPECT_DOUBLE_EQ(j["initial_perplexity"]["mean"].get<double>(), 40.0);
  ASSERT_EQ(j["rounds"].size(), 2u);
  const auto& r1 = j["rounds"][0];
  EXPECT_EQ(r1["state"], "published");
  EXPECT_EQ(r1["survivors"], 4);
  EXPECT_EQ(r1["stages"][0]["stage"], "advertise_keys");
  EXPECT_EQ(r1["stages"][0]["expected"], 5);
  EXPECT_EQ(r1["faults"]["drops"]["share_keys"], 1);
  EXPECT_DOUBLE_EQ(r1["perplexity"]["pooled"].get<double>(), 31.0);
  for (const char* key : {"traffic", "training", "duration_ms", "wall_ms", "cohort", "check_ins"}) {
    EXPECT_TRUE(r1.contains(key)) << key;
  }
  EXPECT_TRUE(j["rounds"][1]["perplexity"].is_null());
  EXPECT_EQ(j["rounds"][1]["reason"], "too few survivors");
}

TEST(ReportTest, RoundLineNamesTheOutcome) {
  const SimulationReport r = Sample();
  const std::string line = FormatRoundLine(r.rounds[0], 2);
  EXPECT_NE(line.find("round 1/2 published"), std::string::npos) << line;
  EXPECT_NE(line.find("survivors 4"), std::string::npos) << line;
  EXPECT_NE(line.find("pooled 31.00"), std::string::npos) << line;
  EXPECT_NE(FormatRoundLine(r.rounds[1], 2).find("too few survivors"), std::string::npos);
}

TEST(ReportTest, WritesTheFile) {
  auto dir = TempDir::Create("report_test");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteReport(Sample(), dir->path() / "report.json").ok());
  auto text = ReadFileString(dir->path() / "report.json");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, ReportToJson(Sample()));
}

TEST(FleetPartsTest, ParallelForVisitsEveryIndexAndReportsTheFirstError) {
  std::vector<std::atomic<int>> seen(100);
  ASSERT_TRUE(internal::ParallelFor(100, 3, [&](size_t i) {
    seen[i]++;
    return Status::Ok();
  }).ok());
  for (auto& s : seen) EXPECT_EQ(s.load(), 1);
  const Status s = internal::ParallelFor(50, 2, [](size_t i) {
    return i == 7 ? InvalidArgumentError("item 7") : Status::Ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(internal::ParallelFor(0, 4, [](size_t) { return InternalError("never"); }).ok());
}

TEST(FleetPartsTest, TrainingLogSumsPerRound) {
  internal::TrainingLog log;
  device::LocalTrainingResult ok;
  ok.loss_before = 3.0f;
  ok.loss_after = 2.0f;
  log.Record("r1", ok, 0.5);
  log.Record("r1", ok, 1.5);
  log.Record("r1", Result<device::LocalTrainingResult>(InternalError("boom")), 0.1);
  const auto t = log.Totals("r1");
  EXPECT_EQ(t.trained, 2u);
  EXPECT_EQ(t.failures, 1u);
  EXPECT_DOUBLE_EQ(t.seconds_max, 1.5);
  EXPECT_NEAR(t.seconds_total, 2.1, 1e-9);
  EXPECT_DOUBLE_EQ(t.loss_before_sum / t.trained, 3.0);
  EXPECT_EQ(log.Totals("other").trained, 0u);
}

}  // namespace
}  // namespace flotilla::simulator
