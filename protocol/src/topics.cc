#include "flotilla/protocol/topics.h"

#include <array>
#include <cstdio>
#include <string>

#include "flotilla/protocol/version.h"

namespace flotilla::protocol {
namespace {

// Longest valid topic is fl/v1/d/{64}/up/event/{64} = 145 bytes; anything much longer is
// refused before it is split.
constexpr size_t kMaxTopicLength = 256;
constexpr size_t kMaxLevels = 8;

bool IsSafeChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

// Quotes untrusted text for an error message: at most 80 bytes, non-printables as \xNN,
// so a hostile topic cannot forge log lines.
std::string Quote(std::string_view s) {
  std::string out = "'";
  const size_t n = s.size() < 80 ? s.size() : 80;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      std::array<char, 5> buf{};
      std::snprintf(buf.data(), buf.size(), "\\x%02x", c);
      out += buf.data();
    }
  }
  if (s.size() > n) out += "...";
  out += "'";
  return out;
}

Status TopicError(std::string_view topic, std::string what) {
  return InvalidArgumentError("topic " + Quote(topic) + ": " + what);
}

// Splits on '/', keeping empty levels. REQUIRES: topic.size() <= kMaxTopicLength.
// Returns false if there are more than kMaxLevels levels.
bool SplitLevels(std::string_view topic, std::array<std::string_view, kMaxLevels>& levels, size_t& count) {
  count = 0;
  size_t start = 0;
  while (true) {
    const size_t slash = topic.find('/', start);
    if (count == kMaxLevels) return false;
    levels[count++] = topic.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength || name == "." || name == "..") return false;
  for (char c : name) {
    if (!IsSafeChar(c)) return false;
  }
  return true;
}

Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty()) return InvalidArgumentError(std::string(what) + " is empty");
  if (name.size() > kMaxNameLength) {
    return InvalidArgumentError(std::string(what) + " " + Quote(name) + " is " + std::to_string(name.size()) +
                                " characters long (at most " + std::to_string(kMaxNameLength) + ")");
  }
  if (name == "." || name == "..") return InvalidArgumentError(std::string(what) + " must not be " + Quote(name));
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsSafeChar(name[i])) {
      return InvalidArgumentError(std::string(what) + " " + Quote(name) + " has character " +
                                  Quote(name.substr(i, 1)) + " at offset " + std::to_string(i) +
                                  " (allowed: A-Z a-z 0-9 . _ -)");
    }
  }
  return Status::Ok();
}

std::string_view ToString(TopicKind kind) {
  switch (kind) {
    case TopicKind::kPresence: return "presence";
    case TopicKind::kReported: return "reported";
    case TopicKind::kEvent: return "event";
    case TopicKind::kTelemetry: return "telemetry";
    case TopicKind::kCommand: return "command";
    case TopicKind::kDesired: return "desired";
    case TopicKind::kGroupRound: return "group-round";
  }
  return "unknown";
}

bool IsUplink(TopicKind kind) {
  switch (kind) {
    case TopicKind::kPresence:
    case TopicKind::kReported:
    case TopicKind::kEvent:
    case TopicKind::kTelemetry: return true;
    case TopicKind::kCommand:
    case TopicKind::kDesired:
    case TopicKind::kGroupRound: return false;
  }
  return false;
}

Result<std::string> FormatTopic(const Topic& t) {
  const bool has_name = t.kind == TopicKind::kEvent || t.kind == TopicKind::kCommand;
  if (t.kind == TopicKind::kGroupRound) {
    if (!t.device_id.empty()) return InvalidArgumentError("group topic must not set a device id");
    FLT_RETURN_IF_ERROR(ValidateName("group", t.group));
  } else {
    if (!t.group.empty()) return InvalidArgumentError("device topic must not set a group");
    FLT_RETURN_IF_ERROR(ValidateName("device id", t.device_id));
  }
  if (has_name) {
    FLT_RETURN_IF_ERROR(ValidateName(t.kind == TopicKind::kEvent ? "event kind" : "command name", t.name));
  } else if (!t.name.empty()) {
    return InvalidArgumentError(std::string("topic kind ") + std::string(ToString(t.kind)) + " takes no name");
  }

  std::string out(kTopicPrefix);
  switch (t.kind) {
    case TopicKind::kPresence: return out + "/d/" + t.device_id + "/up/presence";
    case TopicKind::kReported: return out + "/d/" + t.device_id + "/up/reported";
    case TopicKind::kEvent: return out + "/d/" + t.device_id + "/up/event/" + t.name;
    case TopicKind::kTelemetry: return out + "/d/" + t.device_id + "/up/telemetry";
    case TopicKind::kCommand: return out + "/d/" + t.device_id + "/dn/cmd/" + t.name;
    case TopicKind::kDesired: return out + "/d/" + t.device_id + "/dn/desired";
    case TopicKind::kGroupRound: return out + "/g/" + t.group + "/dn/round";
  }
  return InvalidArgumentError("unknown topic kind " + std::to_string(static_cast<int>(t.kind)));
}

Result<Topic> ParseTopic(std::string_view topic) {
  if (topic.empty()) return TopicError(topic, "empty");
  if (topic.size() > kMaxTopicLength) {
    return TopicError(topic, "too long (" + std::to_string(topic.size()) + " bytes)");
  }
  std::array<std::string_view, kMaxLevels> lv;
  size_t n = 0;
  if (!SplitLevels(topic, lv, n)) return TopicError(topic, "too many levels");
  for (size_t i = 0; i < n; ++i) {
    if (lv[i].empty()) return TopicError(topic, "level " + std::to_string(i) + " is empty");
  }
  // The prefix is compared as a whole, so "fl/v2", "$SYS" or "other/..." are foreign.
  if (n < 2 || lv[0] != "fl" || lv[1] != "v1") {
    return TopicError(topic, "not under " + Quote(kTopicPrefix));
  }
  if (n < 6) return TopicError(topic, "too few levels (" + std::to_string(n) + ")");
  const std::string_view scope = lv[2];
  const std::string_view id = lv[3];
  const std::string_view dir = lv[4];
  const std::string_view leaf = lv[5];

  auto name_error = [&](size_t level, std::string_view what) -> Status {
    Status s = ValidateName(what, lv[level]);
    return TopicError(topic, "level " + std::to_string(level) + ": " + s.message());
  };
  auto expect_levels = [&](size_t want) -> Status {
    if (n == want) return Status::Ok();
    if (n > want) return TopicError(topic, "extra levels after " + Quote(lv[want - 1]));
    return TopicError(topic, "missing level after " + Quote(lv[n - 1]));
  };

  Topic t;
  if (scope == "d") {
    if (!IsValidName(id)) return name_error(3, "device id");
    t.device_id = std::string(id);
    if (dir == "up") {
      if (leaf == "presence") {
        t.kind = TopicKind::kPresence;
      } else if (leaf == "reported") {
        t.kind = TopicKind::kReported;
      } else if (leaf == "telemetry") {
        t.kind = TopicKind::kTelemetry;
      } else if (leaf == "event") {
        t.kind = TopicKind::kEvent;
      } else {
        return TopicError(topic, "unknown uplink leaf " + Quote(leaf));
      }
    } else if (dir == "dn") {
      if (leaf == "desired") {
        t.kind = TopicKind::kDesired;
      } else if (leaf == "cmd") {
        t.kind = TopicKind::kCommand;
      } else {
        return TopicError(topic, "unknown downlink leaf " + Quote(leaf));
      }
    } else {
      return TopicError(topic, "level 4 must be 'up' or 'dn', got " + Quote(dir));
    }
    if (t.kind == TopicKind::kEvent || t.kind == TopicKind::kCommand) {
      FLT_RETURN_IF_ERROR(expect_levels(7));
      if (!IsValidName(lv[6])) return name_error(6, t.kind == TopicKind::kEvent ? "event kind" : "command name");
      t.name = std::string(lv[6]);
    } else {
      FLT_RETURN_IF_ERROR(expect_levels(6));
    }
    return t;
  }
  if (scope == "g") {
    if (!IsValidName(id)) return name_error(3, "group");
    if (dir != "dn") return TopicError(topic, "group topics are downlink only, got " + Quote(dir));
    if (leaf != "round") return TopicError(topic, "unknown group leaf " + Quote(leaf));
    FLT_RETURN_IF_ERROR(expect_levels(6));
    t.kind = TopicKind::kGroupRound;
    t.group = std::string(id);
    return t;
  }
  return TopicError(topic, "level 2 must be 'd' or 'g', got " + Quote(scope));
}

TopicPolicy PolicyFor(TopicKind kind) {
  switch (kind) {
    case TopicKind::kPresence:
    case TopicKind::kReported:
    case TopicKind::kDesired: return {1, true};
    case TopicKind::kTelemetry: return {0, false};
    case TopicKind::kEvent:
    case TopicKind::kCommand:
    case TopicKind::kGroupRound: return {1, false};
  }
  return {1, false};
}

Result<std::vector<TopicFilter>> CoordinatorSubscriptions(std::string_view share_group) {
  std::string filter = std::string(kTopicPrefix) + "/d/+/up/#";
  if (!share_group.empty()) {
    FLT_RETURN_IF_ERROR(ValidateName("share group", share_group));
    filter = "$share/" + std::string(share_group) + "/" + filter;
  }
  return std::vector<TopicFilter>{{std::move(filter), 1}};
}

Result<std::vector<TopicFilter>> DeviceSubscriptions(std::string_view device_id,
                                                     std::span<const std::string> groups) {
  FLT_RETURN_IF_ERROR(ValidateName("device id", device_id));
  std::vector<TopicFilter> out;
  out.push_back({std::string(kTopicPrefix) + "/d/" + std::string(device_id) + "/dn/#", 1});
  for (const std::string& g : groups) {
    FLT_ASSIGN_OR_RETURN(std::string topic, FormatTopic(Topic::GroupRound(g)));
    out.push_back({std::move(topic), 1});
  }
  return out;
}

}  // namespace flotilla::protocol
