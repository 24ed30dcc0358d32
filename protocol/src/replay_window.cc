#include "flotilla/protocol/replay_window.h"

#include <algorithm>
#include <string>

#include "flotilla/core/check.h"
#include "saturating.h"

namespace flotilla::protocol {
namespace {

using internal::SaturatingAdd;
using internal::SaturatingSub;

// Length-prefixed so that no (sender, id) pair can collide with another.
std::string MakeKey(std::string_view sender, std::string_view message_id) {
  std::string key;
  key.reserve(4 + sender.size() + message_id.size());
  const auto n = static_cast<uint32_t>(sender.size());
  for (int i = 0; i < 4; ++i) key.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  key.append(sender);
  key.append(message_id);
  return key;
}

}  // namespace

ReplayWindow::ReplayWindow(Options options) : options_(options) {
  FLT_CHECK_MSG(options_.capacity > 0, "ReplayWindow capacity must be positive");
  FLT_CHECK_MSG(options_.window.count() > 0, "ReplayWindow window must be positive");
}

void ReplayWindow::PopOldest() {
  const Entry oldest = by_time_.top();
  by_time_.pop();
  seen_.erase(*oldest.key);
}

Status ReplayWindow::Check(std::string_view sender_id, std::string_view message_id, int64_t timestamp_ms,
                           int64_t now_ms) {
  const int64_t window = options_.window.count();
  std::string key = MakeKey(sender_id, message_id);
  std::lock_guard<std::mutex> lock(mu_);
  // A wall clock stepped backwards must not re-open ids already forgotten as expired.
  latest_now_ms_ = std::max(latest_now_ms_, now_ms);
  const int64_t oldest_allowed = SaturatingSub(latest_now_ms_, window);
  if (timestamp_ms < oldest_allowed) {
    return DeadlineExceededError("replay window: timestamp " + std::to_string(timestamp_ms) +
                                 " ms is older than the " + std::to_string(window) + " ms window (now " +
                                 std::to_string(latest_now_ms_) + " ms)");
  }
  if (timestamp_ms > SaturatingAdd(latest_now_ms_, window)) {
    return DeadlineExceededError("replay window: timestamp " + std::to_string(timestamp_ms) + " ms is more than " +
                                 std::to_string(window) + " ms in the future");
  }
  // Expired entries can go: a replay of one carries its old timestamp and fails above.
  while (!by_time_.empty() && by_time_.top().timestamp_ms < oldest_allowed) PopOldest();

  if (timestamp_ms <= floor_ms_) {
    return ResourceExhaustedError("replay window: full; timestamp " + std::to_string(timestamp_ms) +
                                  " ms is not newer than a forgotten entry (" + std::to_string(floor_ms_) + " ms)");
  }
  auto [it, inserted] = seen_.try_emplace(std::move(key), timestamp_ms);
  if (!inserted) {
    return AlreadyExistsError("replay window: message from '" + std::string(sender_id) + "' already seen");
  }
  by_time_.push(Entry{timestamp_ms, &it->first});
  while (seen_.size() > options_.capacity) {
    // Forgetting an entry early moves the floor up to its timestamp, so a replay of it
    // (same timestamp) is still refused. The entry just added may be the one forgotten.
    floor_ms_ = std::max(floor_ms_, by_time_.top().timestamp_ms);
    PopOldest();
  }
  return Status::Ok();
}

size_t ReplayWindow::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_.size();
}

int64_t ReplayWindow::eviction_floor_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return floor_ms_;
}

}  // namespace flotilla::protocol
