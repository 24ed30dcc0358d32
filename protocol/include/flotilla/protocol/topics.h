// The MQTT topic tree (ARCHITECTURE.md section 5): build, parse and validate topics, and
// the subscription filters each side needs.
//
//   fl/v1/d/{id}/up/presence       QoS1 retained (Will = offline)
//   fl/v1/d/{id}/up/reported       QoS1 retained
//   fl/v1/d/{id}/up/event/{kind}   QoS1
//   fl/v1/d/{id}/up/telemetry      QoS0
//   fl/v1/d/{id}/dn/cmd/{name}     QoS1 with message expiry
//   fl/v1/d/{id}/dn/desired        QoS1 retained
//   fl/v1/g/{group}/dn/round       QoS1
//
// Every variable level ({id}, {group}, {kind}, {name}) must be a "safe name": 1-64
// characters from [A-Za-z0-9._-], and not "." or "..". That excludes the MQTT wildcards
// + and #, '/', '$', whitespace and NUL, so a parsed topic can be used in file names,
// ACL patterns and log lines. All functions are pure and thread-safe. MQTT filter
// matching (TopicMatchesFilter) lives with the Transport interface in transport.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::protocol {

inline constexpr size_t kMaxNameLength = 64;

// True if `name` is a safe name (see above).
bool IsValidName(std::string_view name);
// OK, or InvalidArgument naming `what` ("device id", "group", ...) and the offending
// character or length.
Status ValidateName(std::string_view what, std::string_view name);

// Append-only (values may be logged and stored).
enum class TopicKind : uint8_t {
  kPresence = 1,    // d/{id}/up/presence
  kReported = 2,    // d/{id}/up/reported
  kEvent = 3,       // d/{id}/up/event/{kind}
  kTelemetry = 4,   // d/{id}/up/telemetry
  kCommand = 5,     // d/{id}/dn/cmd/{name}
  kDesired = 6,     // d/{id}/dn/desired
  kGroupRound = 7,  // g/{group}/dn/round
};
std::string_view ToString(TopicKind kind);

// True for device → coordinator topics (d/{id}/up/...).
bool IsUplink(TopicKind kind);

struct Topic {
  TopicKind kind = TopicKind::kPresence;
  std::string device_id;  // every kind except kGroupRound
  std::string group;      // kGroupRound only
  std::string name;       // {kind} of kEvent, {name} of kCommand; empty otherwise

  static Topic Presence(std::string device_id) { return {TopicKind::kPresence, std::move(device_id), {}, {}}; }
  static Topic Reported(std::string device_id) { return {TopicKind::kReported, std::move(device_id), {}, {}}; }
  static Topic Event(std::string device_id, std::string kind) {
    return {TopicKind::kEvent, std::move(device_id), {}, std::move(kind)};
  }
  static Topic Telemetry(std::string device_id) { return {TopicKind::kTelemetry, std::move(device_id), {}, {}}; }
  static Topic Command(std::string device_id, std::string name) {
    return {TopicKind::kCommand, std::move(device_id), {}, std::move(name)};
  }
  static Topic Desired(std::string device_id) { return {TopicKind::kDesired, std::move(device_id), {}, {}}; }
  static Topic GroupRound(std::string group) { return {TopicKind::kGroupRound, {}, std::move(group), {}}; }

  friend bool operator==(const Topic&, const Topic&) = default;
};

// The topic string, or InvalidArgument if a level is not a safe name or a field that the
// kind does not use is set (a half-filled Topic is a bug the caller should hear about).
Result<std::string> FormatTopic(const Topic& topic);

// Parses a concrete topic (as received). InvalidArgument, with the position, for another
// prefix, empty levels, wildcards, unsafe names, missing or extra levels, unknown leaves.
Result<Topic> ParseTopic(std::string_view topic);

// Delivery policy of a topic kind (ARCHITECTURE.md section 5). QoS 2 is never used.
struct TopicPolicy {
  int qos = 1;
  bool retain = false;
};
TopicPolicy PolicyFor(TopicKind kind);

// Well-known {kind} / {name} levels (docs/protocol.md maps every payload type to one).
namespace topic_names {
inline constexpr std::string_view kEnrolEvent = "enrol";
inline constexpr std::string_view kRoundEvent = "round";
inline constexpr std::string_view kSecAggEvent = "secagg";
inline constexpr std::string_view kOtaReportEvent = "ota-report";
inline constexpr std::string_view kEnrolmentCommand = "enrolment";
inline constexpr std::string_view kRoundCommand = "round";
inline constexpr std::string_view kSecAggCommand = "secagg";
inline constexpr std::string_view kOtaCommand = "ota";
}  // namespace topic_names

struct TopicFilter {
  std::string filter;
  int qos = 1;
};

// What the coordinator subscribes to: every device's uplink, fl/v1/d/+/up/#. With a
// non-empty `share_group` the filter is a shared subscription
// ($share/{share_group}/fl/v1/d/+/up/#) so several coordinator replicas split the load.
// InvalidArgument if share_group is not a safe name.
Result<std::vector<TopicFilter>> CoordinatorSubscriptions(std::string_view share_group = {});

// What a device subscribes to: fl/v1/d/{id}/dn/# and fl/v1/g/{group}/dn/round for each
// of its groups. InvalidArgument if an id or group is not a safe name.
Result<std::vector<TopicFilter>> DeviceSubscriptions(std::string_view device_id,
                                                     std::span<const std::string> groups);

}  // namespace flotilla::protocol
