// Metrics: Prometheus rendering, histograms, persisted counters.
#include "flotilla/coordinator/metrics.h"

#include <gtest/gtest.h>

#include "prometheus_text.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;

TEST(HistogramTest, BucketsAreNonCumulativeInternallyAndCountEverything) {
  Histogram h;
  h.Observe(0.001);
  h.Observe(0.3);
  h.Observe(1000);
  EXPECT_EQ(h.count, 3u);
  EXPECT_EQ(h.buckets[0], 1u);
  EXPECT_EQ(h.buckets[6], 1u);  // 0.3 <= 0.5
  uint64_t in_buckets = 0;
  for (uint64_t b : h.buckets) in_buckets += b;
  EXPECT_EQ(in_buckets, 2u);  // 1000 s only in +Inf
  EXPECT_DOUBLE_EQ(h.sum, 1000.301);
}

TEST(MetricsTest, RendersValidPrometheusTextWithEveryFamily) {
  Metrics m;
  m.AddBytesIn(100);
  m.AddBytesOut(7);
  m.ObserveStageDuration("share_keys", 0.2);
  m.ObserveStageDuration("share_keys", 3);
  m.ObserveStageDuration("we\"ird\\", 0.01);
  m.ObserveAggregation(0.04);
  m.CountHttpResponse(200);
  m.CountHttpResponse(404);
  StoreGauges g;
  g.devices_online = 3;
  g.devices_active = 5;
  g.rounds[RoundState::kFailed] = 2;
  const std::string text = m.Render(g);
  auto samples = testutil::ParsePrometheusText(text);
  ASSERT_TRUE(samples.ok()) << samples.status().ToString() << "\n" << text;
  auto& s = *samples;
  EXPECT_EQ(s["flotilla_devices_online"], 3);
  EXPECT_EQ(s["flotilla_rounds{state=\"failed\"}"], 2);
  EXPECT_EQ(s["flotilla_rounds{state=\"created\"}"], 0);
  EXPECT_EQ(s["flotilla_bytes_in_total"], 100);
  EXPECT_EQ(s["flotilla_bytes_out_total"], 7);
  EXPECT_EQ(s["flotilla_stage_duration_seconds_count{stage=\"share_keys\"}"], 2);
  EXPECT_EQ(s["flotilla_stage_duration_seconds_bucket{stage=\"share_keys\",le=\"0.25\"}"], 1);
  EXPECT_EQ(s["flotilla_stage_duration_seconds_bucket{stage=\"share_keys\",le=\"5\"}"], 2);
  EXPECT_EQ(s["flotilla_stage_duration_seconds_bucket{stage=\"share_keys\",le=\"+Inf\"}"], 2);
  EXPECT_EQ(s["flotilla_aggregation_seconds_count"], 1);
  EXPECT_EQ(s["flotilla_http_requests_total{code=\"4xx\"}"], 1);
  EXPECT_NE(text.find("stage=\"we\\\"ird\\\\\""), std::string::npos);  // label escaping
}

class MetricsStoreTest : public testutil::StoreFixture {};

TEST_F(MetricsStoreTest, CountersSurviveARestartWithoutDoubleCounting) {
  {
    Metrics m;
    ASSERT_TRUE(m.LoadFrom(*store_).ok());
    m.AddBytesIn(10);
    ASSERT_TRUE(m.FlushTo(*store_).ok());
    m.AddBytesIn(5);
    ASSERT_TRUE(m.FlushTo(*store_).ok());
    ASSERT_TRUE(m.FlushTo(*store_).ok());  // nothing new
  }
  Metrics again;
  ASSERT_TRUE(again.LoadFrom(*store_).ok());
  EXPECT_EQ(again.bytes_in(), 15u);
  again.AddBytesOut(1);
  ASSERT_TRUE(again.FlushTo(*store_).ok());
  EXPECT_EQ(Must(store_->Counters())["bytes_in_total"], 15);
  EXPECT_EQ(Must(store_->Counters())["bytes_out_total"], 1);
  StoreGauges g = Must(CollectGauges(*store_));
  EXPECT_EQ(g.devices_online, 0);
  EXPECT_EQ(g.rounds.size(), AllRoundStates().size());
}

}  // namespace
}  // namespace flotilla::coordinator
