#include "flotilla/simulator/faults.h"

#include <gtest/gtest.h>

namespace flotilla::simulator {
namespace {

using device::AgentStage;

TEST(FaultsTest, ParsesStageDropouts) {
  auto d = ParseDropouts("advertise_keys=0.05, masked_input=0.1");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_DOUBLE_EQ((*d)[static_cast<size_t>(AgentStage::kAdvertiseKeys)], 0.05);
  EXPECT_DOUBLE_EQ((*d)[static_cast<size_t>(AgentStage::kMaskedInput)], 0.1);
  EXPECT_DOUBLE_EQ((*d)[static_cast<size_t>(AgentStage::kUnmask)], 0.0);
  EXPECT_EQ(FormatDropouts(*d), "advertise_keys=0.050000,masked_input=0.100000");

  auto all = ParseDropouts("all=0.2");
  ASSERT_TRUE(all.ok());
  for (double p : *all) EXPECT_DOUBLE_EQ(p, 0.2);
  EXPECT_TRUE(ParseDropouts("").ok());
}

TEST(FaultsTest, RefusesBadDropoutSpecs) {
  EXPECT_EQ(ParseDropouts("nonsense").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDropouts("bogus_stage=0.1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDropouts("unmask=1.5").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDropouts("unmask=-0.1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDropouts("unmask=0.1x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ParseDropouts("bogus_stage=0.1").status().message().find("bogus_stage"), std::string::npos);
}

TEST(FaultsTest, DropsAreDeterministicAndNearTheRate) {
  FaultOptions o;
  o.dropout[static_cast<size_t>(AgentStage::kShareKeys)] = 0.2;
  o.seed = 9;
  FaultPlan a(o), b(o);
  int dropped = 0;
  for (uint64_t dev = 0; dev < 5000; ++dev) {
    const bool x = a.DropBefore(dev, "round-1", AgentStage::kShareKeys);
    EXPECT_EQ(x, b.DropBefore(dev, "round-1", AgentStage::kShareKeys));
    EXPECT_FALSE(a.DropBefore(dev, "round-1", AgentStage::kUnmask));  // rate 0
    dropped += x;
  }
  EXPECT_NEAR(dropped / 5000.0, 0.2, 0.03);
  EXPECT_EQ(a.drops().at("share_keys"), static_cast<uint64_t>(dropped));
  EXPECT_EQ(a.drops().count("unmask"), 0u);

  // Another round or seed: another set of devices.
  int same = 0;
  for (uint64_t dev = 0; dev < 1000; ++dev) {
    same += a.DropBefore(dev, "round-1", AgentStage::kShareKeys) == a.DropBefore(dev, "round-2", AgentStage::kShareKeys);
  }
  EXPECT_LT(same, 1000);
}

TEST(FaultsTest, DisconnectsWithinTheWindow) {
  FaultOptions o;
  o.disconnect_rate = 0.5;
  o.disconnect_window = std::chrono::milliseconds(1000);
  FaultPlan plan(o);
  int cut = 0;
  for (uint64_t dev = 0; dev < 2000; ++dev) {
    std::chrono::milliseconds offset{-1};
    if (plan.Disconnects(dev, 1, &offset)) {
      ++cut;
      EXPECT_GE(offset.count(), 0);
      EXPECT_LT(offset.count(), 1000);
    }
  }
  EXPECT_NEAR(cut / 2000.0, 0.5, 0.05);
  FaultPlan none(FaultOptions{});
  EXPECT_FALSE(none.Disconnects(1, 1, nullptr));
}

}  // namespace
}  // namespace flotilla::simulator
