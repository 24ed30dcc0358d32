// ReplayWindow: remembers which (sender, message id) pairs were accepted, so a
// redelivered or replayed envelope is handled once. QoS 1 redelivers, attackers replay:
// receivers apply this after Open() succeeds and before acting on the message.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
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
    // Most entries kept (16 bytes each, in an open-addressing table at most 3/4 full).
    // When full, the oldest entries are forgotten (the oldest 1/32 at once, at least the
    // excess) and everything not newer than them is refused from then on.
    size_t capacity = 64 * 1024;
  };

  explicit ReplayWindow(Options options);
  ReplayWindow() : ReplayWindow(Options{}) {}

  // Longest message id accepted (envelopes carry kMessageIdBytes = 16).
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

  // Entries remembered and not yet expired.
  size_t size() const;
  // Timestamps at or below this are refused because of capacity evictions (INT64_MIN if
  // nothing was evicted early).
  int64_t eviction_floor_ms() const;

 private:
  // A remembered message: a keyed 64-bit fingerprint of (sender, id) and its timestamp.
  // fp 0 marks an empty slot. Two messages share a fingerprint with probability 2^-64
  // per pair; the key is drawn from the CSPRNG per window, and a sender never sees
  // another sender's (random) ids to aim at, so a collision (the later message refused
  // as a replay) is not something a device can cause for another.
  struct Slot {
    uint64_t fp = 0;
    int64_t ts = 0;
  };

  uint64_t Fingerprint(std::string_view sender_id, std::string_view message_id) const;
  // REQUIRES: mu_ held. The slot holding `fp`, or the empty slot where it would go.
  Slot& Find(uint64_t fp);
  // REQUIRES: mu_ held. Rebuilds the table keeping the entries newer than
  // `drop_at_or_below` and not older than `oldest_allowed`, sized so that they fill at
  // most half of it (growth and shrinking both happen here).
  void Rebuild(int64_t drop_at_or_below, int64_t oldest_allowed);

  const Options options_;
  const uint64_t key_;
  mutable std::mutex mu_;
  std::vector<Slot> table_;         // GUARDED_BY(mu_); size a power of two
  size_t used_ = 0;                 // GUARDED_BY(mu_); occupied slots, expired ones included
  int64_t floor_ms_ = INT64_MIN;    // GUARDED_BY(mu_)
  int64_t latest_now_ms_ = INT64_MIN;  // GUARDED_BY(mu_)
};

}  // namespace flotilla::protocol
