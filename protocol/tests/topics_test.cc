#include "flotilla/protocol/topics.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flotilla/protocol/transport.h"  // TopicMatchesFilter

namespace flotilla::protocol {
namespace {

TEST(TopicsTest, EveryKindRoundTrips) {
  const std::vector<std::pair<Topic, std::string>> cases = {
      {Topic::Presence("dev-1"), "fl/v1/d/dev-1/up/presence"},
      {Topic::Reported("dev-1"), "fl/v1/d/dev-1/up/reported"},
      {Topic::Event("dev-1", "round"), "fl/v1/d/dev-1/up/event/round"},
      {Topic::Telemetry("Dev_2.x"), "fl/v1/d/Dev_2.x/up/telemetry"},
      {Topic::Command("dev-1", "ota"), "fl/v1/d/dev-1/dn/cmd/ota"},
      {Topic::Desired("dev-1"), "fl/v1/d/dev-1/dn/desired"},
      {Topic::GroupRound("lab"), "fl/v1/g/lab/dn/round"},
  };
  for (const auto& [topic, text] : cases) {
    Result<std::string> built = FormatTopic(topic);
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    EXPECT_EQ(*built, text);
    Result<Topic> parsed = ParseTopic(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status().ToString();
    EXPECT_EQ(*parsed, topic) << text;
  }
}

TEST(TopicsTest, LongestNamesRoundTrip) {
  const std::string id(kMaxNameLength, 'a');
  const std::string name(kMaxNameLength, 'z');
  Result<std::string> built = FormatTopic(Topic::Event(id, name));
  ASSERT_TRUE(built.ok());
  Result<Topic> parsed = ParseTopic(*built);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->device_id, id);
  EXPECT_EQ(parsed->name, name);
}

struct Rejected {
  std::string topic;
  std::string why;  // substring of the error message
};

TEST(TopicsTest, RejectsMalformedAndForeignTopics) {
  const std::string long_id(kMaxNameLength + 1, 'a');
  const std::vector<Rejected> cases = {
      {"", "empty"},
      {"fl/v2/d/dev-1/up/presence", "not under"},
      {"xx/v1/d/dev-1/up/presence", "not under"},
      {"$SYS/broker/uptime", "not under"},
      {"/fl/v1/d/dev-1/up/presence", "level 0 is empty"},
      {"fl/v1/d//up/presence", "level 3 is empty"},
      {"fl/v1/d/dev-1/up/presence/", "level 6 is empty"},
      {"fl/v1/d/dev-1/up//presence", "level 5 is empty"},
      {"fl/v1/d/+/up/presence", "device id '+'"},
      {"fl/v1/d/#/up/presence", "device id '#'"},
      {"fl/v1/d/dev+1/up/presence", "character '+'"},
      {"fl/v1/d/dev-1/up/event/#", "event kind"},
      {"fl/v1/d/dev-1/dn/cmd/+", "command name"},
      {"fl/v1/g/+/dn/round", "group"},
      {"fl/v1/d/dev 1/up/presence", "character ' '"},
      {"fl/v1/d/dév/up/presence", "character"},
      {std::string("fl/v1/d/de\0v/up/presence", 24), "\\x00"},
      {"fl/v1/d/dev$1/up/presence", "character '$'"},
      {"fl/v1/d/../up/presence", "must not be '..'"},
      {"fl/v1/d/./up/presence", "must not be '.'"},
      {"fl/v1/d/" + long_id + "/up/presence", "characters long"},
      {"fl/v1/d/dev-1/up", "too few levels"},
      {"fl/v1/d/dev-1", "too few levels"},
      {"fl/v1", "too few levels"},
      {"fl/v1/d/dev-1/up/event", "missing level after 'event'"},
      {"fl/v1/d/dev-1/dn/cmd", "missing level after 'cmd'"},
      {"fl/v1/d/dev-1/up/presence/extra", "extra levels"},
      {"fl/v1/d/dev-1/up/event/round/extra", "extra levels"},
      {"fl/v1/g/lab/dn/round/x", "extra levels"},
      {"fl/v1/d/dev-1/up/status", "unknown uplink leaf"},
      {"fl/v1/d/dev-1/up/desired", "unknown uplink leaf"},
      {"fl/v1/d/dev-1/dn/presence", "unknown downlink leaf"},
      {"fl/v1/d/dev-1/sideways/presence", "'up' or 'dn'"},
      {"fl/v1/g/lab/up/round", "downlink only"},
      {"fl/v1/g/lab/dn/announce", "unknown group leaf"},
      {"fl/v1/x/dev-1/up/presence", "'d' or 'g'"},
      {"FL/V1/d/dev-1/up/presence", "not under"},
      {"fl/v1/d/dev-1/up/event/a/b/c", "too many levels"},
      {std::string(300, 'a'), "too long"},
  };
  for (const Rejected& c : cases) {
    Result<Topic> parsed = ParseTopic(c.topic);
    ASSERT_FALSE(parsed.ok()) << "accepted: " << c.topic;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument) << c.topic;
    EXPECT_NE(parsed.status().message().find(c.why), std::string::npos)
        << c.topic << " -> " << parsed.status().message() << " (want '" << c.why << "')";
  }
}

TEST(TopicsTest, FormatRejectsUnsafeOrInconsistentTopics) {
  EXPECT_FALSE(FormatTopic(Topic::Presence("")).ok());
  EXPECT_FALSE(FormatTopic(Topic::Presence("a/b")).ok());
  EXPECT_FALSE(FormatTopic(Topic::Presence("+")).ok());
  EXPECT_FALSE(FormatTopic(Topic::Event("dev-1", "")).ok());
  EXPECT_FALSE(FormatTopic(Topic::Command("dev-1", "#")).ok());
  EXPECT_FALSE(FormatTopic(Topic::GroupRound("g/1")).ok());
  Topic half = Topic::Presence("dev-1");
  half.name = "extra";
  EXPECT_FALSE(FormatTopic(half).ok());
  Topic both = Topic::GroupRound("lab");
  both.device_id = "dev-1";
  EXPECT_FALSE(FormatTopic(both).ok());
}

TEST(TopicsTest, NameRules) {
  EXPECT_TRUE(IsValidName("a"));
  EXPECT_TRUE(IsValidName("A-z_0.9"));
  EXPECT_TRUE(IsValidName("..."));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName("."));
  EXPECT_FALSE(IsValidName(".."));
  EXPECT_FALSE(IsValidName(std::string(kMaxNameLength + 1, 'x')));
  for (char c : std::string("/+#$: \t\n\\'\"*?%@")) {
    EXPECT_FALSE(IsValidName(std::string("a") + c + "b")) << "char " << static_cast<int>(c);
  }
  Status s = ValidateName("device id", "ab#c");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("offset 2"), std::string::npos) << s.message();
}

TEST(TopicsTest, ErrorMessagesEscapeControlCharacters) {
  Result<Topic> parsed = ParseTopic("fl/v1/d/a\nFAKE LOG LINE/up/presence");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().message().find('\n'), std::string::npos) << parsed.status().message();
  EXPECT_NE(parsed.status().message().find("\\x0a"), std::string::npos) << parsed.status().message();
}

TEST(TopicsTest, PoliciesFollowTheArchitecture) {
  EXPECT_EQ(PolicyFor(TopicKind::kTelemetry).qos, 0);
  for (TopicKind k : {TopicKind::kPresence, TopicKind::kReported, TopicKind::kDesired}) {
    EXPECT_EQ(PolicyFor(k).qos, 1);
    EXPECT_TRUE(PolicyFor(k).retain) << ToString(k);
  }
  for (TopicKind k : {TopicKind::kEvent, TopicKind::kCommand, TopicKind::kGroupRound}) {
    EXPECT_EQ(PolicyFor(k).qos, 1);
    EXPECT_FALSE(PolicyFor(k).retain) << ToString(k);
  }
  EXPECT_TRUE(IsUplink(TopicKind::kTelemetry));
  EXPECT_FALSE(IsUplink(TopicKind::kCommand));
  EXPECT_FALSE(IsUplink(TopicKind::kGroupRound));
}

TEST(TopicsTest, CoordinatorSubscriptionCoversUplinkOnly) {
  Result<std::vector<TopicFilter>> subs = CoordinatorSubscriptions();
  ASSERT_TRUE(subs.ok());
  ASSERT_EQ(subs->size(), 1u);
  const std::string& f = (*subs)[0].filter;
  EXPECT_EQ(f, "fl/v1/d/+/up/#");
  for (const Topic& t : {Topic::Presence("d1"), Topic::Reported("d1"), Topic::Event("d2", "secagg"),
                         Topic::Telemetry("d3")}) {
    EXPECT_TRUE(TopicMatchesFilter(f, *FormatTopic(t))) << *FormatTopic(t);
  }
  for (const Topic& t : {Topic::Command("d1", "round"), Topic::Desired("d1"), Topic::GroupRound("g")}) {
    EXPECT_FALSE(TopicMatchesFilter(f, *FormatTopic(t))) << *FormatTopic(t);
  }
  Result<std::vector<TopicFilter>> shared = CoordinatorSubscriptions("coord");
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ((*shared)[0].filter, "$share/coord/fl/v1/d/+/up/#");
  EXPECT_FALSE(CoordinatorSubscriptions("co/ord").ok());
}

TEST(TopicsTest, DeviceSubscriptionsCoverItsOwnDownlinkAndGroups) {
  const std::vector<std::string> groups = {"lab", "eu-west"};
  Result<std::vector<TopicFilter>> subs = DeviceSubscriptions("dev-1", groups);
  ASSERT_TRUE(subs.ok()) << subs.status().ToString();
  ASSERT_EQ(subs->size(), 3u);
  auto matches_any = [&](const std::string& topic) {
    for (const TopicFilter& f : *subs) {
      if (TopicMatchesFilter(f.filter, topic)) return true;
    }
    return false;
  };
  EXPECT_TRUE(matches_any(*FormatTopic(Topic::Command("dev-1", "round"))));
  EXPECT_TRUE(matches_any(*FormatTopic(Topic::Desired("dev-1"))));
  EXPECT_TRUE(matches_any(*FormatTopic(Topic::GroupRound("lab"))));
  EXPECT_TRUE(matches_any(*FormatTopic(Topic::GroupRound("eu-west"))));
  EXPECT_FALSE(matches_any(*FormatTopic(Topic::Command("dev-2", "round"))));
  EXPECT_FALSE(matches_any(*FormatTopic(Topic::GroupRound("other"))));
  EXPECT_FALSE(matches_any(*FormatTopic(Topic::Presence("dev-1"))));
  for (const TopicFilter& f : *subs) EXPECT_EQ(f.qos, 1);

  const std::vector<std::string> bad_groups = {"ok", "not/ok"};
  EXPECT_FALSE(DeviceSubscriptions("dev-1", bad_groups).ok());
  EXPECT_FALSE(DeviceSubscriptions("+", groups).ok());
}

}  // namespace
}  // namespace flotilla::protocol
