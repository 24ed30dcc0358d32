// ReplayWindow: remembers which (sender, message id) pairs were accepted, so a
// redelivered or replayed envelope is handled once. QoS 1 redelivers, attackers replay:
// receivers apply this after Open() succeeds and before acting on the message.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flotilla/core/clock.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/envelope.h"

namespace flotilla::protocol {

class ReplayWindow {
 public:
  struct Options {
    // How far back ids are remembered. Must cover OpenOptions::max_age (plus the future
    // skew), so that anything Open() still accepts is also still remembered.
    std::chrono::milliseconds window{std::chrono::minutes(10)};
    // Most entries kept (about 80 bytes each: the message id is stored inline, the sender
    // once per sender). When full, the oldest entry is forgotten and everything not newer
    // than it is refused from then on.
    size_t capacity = 64 * 1024;
  };

  explicit ReplayWindow(Options options);
  ReplayWindow() : ReplayWindow(Options{}) {}

  // Longest message id remembered (envelopes carry kMessageIdBytes = 16).
  static constexpr size_t kMaxMessageIdBytes = 16;

  // Records the message if it is new. OK: first sighting (now remembered).
  // InvalidArgument: a message id longer than kMaxMessageIdBytes.
  // AlreadyExists: seen before (a replay or a redelivery). DeadlineExceeded: older than
  // now - window, or newer than now + window (cannot be remembered long enough).
  // ResourceExhausted: not newer than an entry forgotten because of capacity (it could be
  // a replay of it, so eviction never re-opens a replay). Thread-safe.
  Status Check(std::string_view sender_id, std::string_view message_id, int64_t timestamp_ms, int64_t now_ms);
  Status Check(const OpenedEnvelope& envelope, const Clock& clock) {
    return Check(envelope.sender_id, envelope.message_id, envelope.timestamp_ms, clock.NowUnixMillis());
  }

  size_t size() const;
  // Timestamps at or below this are refused because of capacity evictions (INT64_MIN if
  // nothing was evicted early).
  int64_t eviction_floor_ms() const;

 private:
  // A remembered (sender, message id): the sender as a number (senders_), the id inline.
  struct Key {
    uint32_t sender = 0;
    uint8_t id_size = 0;
    std::array<uint8_t, kMaxMessageIdBytes> id{};
    bool operator==(const Key& o) const { return sender == o.sender && id_size == o.id_size && id == o.id; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  struct Entry {
    int64_t timestamp_ms;
    const Key* key;  // points into seen_ (node keys are stable)
  };
  struct Later {
    bool operator()(const Entry& a, const Entry& b) const { return a.timestamp_ms > b.timestamp_ms; }
  };
  struct Sender {
    uint32_t number = 0;
    size_t entries = 0;  // remembered messages from it; at 0 it is forgotten too
  };

  // REQUIRES: mu_ held. Forgets the oldest entry.
  void PopOldest();

  const Options options_;
  mutable std::mutex mu_;
  std::unordered_map<Key, int64_t, KeyHash> seen_;                     // GUARDED_BY(mu_)
  std::priority_queue<Entry, std::vector<Entry>, Later> by_time_;      // GUARDED_BY(mu_)
  std::unordered_map<std::string, Sender> senders_;                    // GUARDED_BY(mu_)
  std::vector<std::pair<const std::string, Sender>*> sender_by_number_;  // GUARDED_BY(mu_); nullptr: free
  std::vector<uint32_t> free_numbers_;                                 // GUARDED_BY(mu_)
  int64_t floor_ms_ = INT64_MIN;                                       // GUARDED_BY(mu_)
  int64_t latest_now_ms_ = INT64_MIN;                                  // GUARDED_BY(mu_)
};

}  // namespace flotilla::protocol
