#include "flotilla/protocol/replay_window.h"

#include <algorithm>
#include <string>

#include "flotilla/core/check.h"
#include "saturating.h"

namespace flotilla::protocol {
namespace {

using internal::SaturatingAdd;
using internal::SaturatingSub;

}  // namespace

ReplayWindow::ReplayWindow(Options options) : options_(options) {
  FLT_CHECK_MSG(options_.capacity > 0, "ReplayWindow capacity must be positive");
  FLT_CHECK_MSG(options_.window.count() > 0, "ReplayWindow window must be positive");
}

size_t ReplayWindow::KeyHash::operator()(const Key& k) const {
  std::string_view id(reinterpret_cast<const char*>(k.id.data()), k.id_size);
  return std::hash<std::string_view>{}(id) ^ (size_t{k.sender} * 0x9e3779b97f4a7c15ULL);
}

void ReplayWindow::PopOldest() {
  const Entry oldest = by_time_.top();
  by_time_.pop();
  const uint32_t number = oldest.key->sender;
  seen_.erase(*oldest.key);
  auto* sender = sender_by_number_[number];
  if (--sender->second.entries == 0) {
    sender_by_number_[number] = nullptr;
    free_numbers_.push_back(number);
    senders_.erase(sender->first);
  }
}

Status ReplayWindow::Check(std::string_view sender_id, std::string_view message_id, int64_t timestamp_ms,
                           int64_t now_ms) {
  const int64_t window = options_.window.count();
  if (message_id.size() > kMaxMessageIdBytes) {
    return InvalidArgumentError("replay window: message id of " + std::to_string(message_id.size()) +
                                " bytes (at most " + std::to_string(kMaxMessageIdBytes) + ")");
  }
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
  // The sender's number: a remembered sender keeps its own, a new one takes a free one
  // (a new sender has no entries, so its message cannot be a repeat: it is added below).
  auto [sit, new_sender] = senders_.try_emplace(std::string(sender_id));
  if (new_sender) {
    if (free_numbers_.empty()) {
      sit->second.number = static_cast<uint32_t>(sender_by_number_.size());
      sender_by_number_.push_back(&*sit);
    } else {
      sit->second.number = free_numbers_.back();
      free_numbers_.pop_back();
      sender_by_number_[sit->second.number] = &*sit;
    }
  }
  Key key;
  key.sender = sit->second.number;
  key.id_size = static_cast<uint8_t>(message_id.size());
  std::copy(message_id.begin(), message_id.end(), key.id.begin());
  auto [it, inserted] = seen_.try_emplace(key, timestamp_ms);
  if (!inserted) {
    return AlreadyExistsError("replay window: message from '" + std::string(sender_id) + "' already seen");
  }
  ++sit->second.entries;
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
