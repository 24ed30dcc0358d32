#include "flotilla/protocol/replay_window.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "flotilla/core/check.h"
#include "flotilla/core/random.h"
#include "saturating.h"

namespace flotilla::protocol {
namespace {

using internal::SaturatingAdd;
using internal::SaturatingSub;

constexpr size_t kMinSlots = 16;

// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Folds `s` into `h`, length first so that ("ab", "c") and ("a", "bc") differ.
uint64_t Absorb(uint64_t h, std::string_view s) {
  h = Mix(h ^ (static_cast<uint64_t>(s.size()) * 0x9e3779b97f4a7c15ULL));
  for (size_t i = 0; i < s.size(); i += 8) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, std::min<size_t>(8, s.size() - i));
    h = Mix(h ^ w) + 0x9e3779b97f4a7c15ULL;
  }
  return h;
}

}  // namespace

ReplayWindow::ReplayWindow(Options options) : options_(options), key_(OsRandom().NextU64()), table_(kMinSlots) {
  FLT_CHECK_MSG(options_.capacity > 0, "ReplayWindow capacity must be positive");
  FLT_CHECK_MSG(options_.window.count() > 0, "ReplayWindow window must be positive");
}

uint64_t ReplayWindow::Fingerprint(std::string_view sender_id, std::string_view message_id) const {
  const uint64_t fp = Mix(Absorb(Absorb(key_, sender_id), message_id));
  return fp == 0 ? 1 : fp;
}

ReplayWindow::Slot& ReplayWindow::Find(uint64_t fp) {
  const size_t mask = table_.size() - 1;
  size_t i = static_cast<size_t>(fp) & mask;
  while (table_[i].fp != 0 && table_[i].fp != fp) i = (i + 1) & mask;
  return table_[i];
}

void ReplayWindow::Rebuild(int64_t drop_at_or_below, int64_t oldest_allowed) {
  size_t keep = 0;
  for (const Slot& s : table_) keep += s.fp != 0 && s.ts > drop_at_or_below && s.ts >= oldest_allowed;
  std::vector<Slot> old(std::bit_ceil(std::max(kMinSlots, 2 * keep)));
  old.swap(table_);
  used_ = 0;
  for (const Slot& s : old) {
    if (s.fp == 0 || s.ts <= drop_at_or_below || s.ts < oldest_allowed) continue;
    Find(s.fp) = s;
    ++used_;
  }
}

Status ReplayWindow::Check(std::string_view sender_id, std::string_view message_id, int64_t timestamp_ms,
                           int64_t now_ms) {
  const int64_t window = options_.window.count();
  if (message_id.size() > kMaxMessageIdBytes) {
    return InvalidArgumentError("replay window: message id of " + std::to_string(message_id.size()) +
                                " bytes (at most " + std::to_string(kMaxMessageIdBytes) + ")");
  }
  const uint64_t fp = Fingerprint(sender_id, message_id);
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
  if (timestamp_ms <= floor_ms_) {
    return ResourceExhaustedError("replay window: full; timestamp " + std::to_string(timestamp_ms) +
                                  " ms is not newer than a forgotten entry (" + std::to_string(floor_ms_) + " ms)");
  }
  Slot& slot = Find(fp);
  if (slot.fp == fp && slot.ts >= oldest_allowed) {
    return AlreadyExistsError("replay window: message from '" + std::string(sender_id) + "' already seen");
  }
  // An expired entry of the same message is forgotten: its slot is reused. (A replay of
  // it carries its old timestamp and was refused above.)
  if (slot.fp == 0) ++used_;
  slot = Slot{fp, timestamp_ms};

  if (used_ > options_.capacity) {
    Rebuild(INT64_MIN, oldest_allowed);  // expired entries go first
    if (used_ > options_.capacity) {
      // Forget the oldest: the excess, plus 1/32 of the capacity so that this happens
      // once per capacity/32 messages. The floor moves to the newest forgotten
      // timestamp, so a replay of any of them (same timestamp) is still refused. The
      // entry just added may be one of them.
      const size_t evict = used_ - options_.capacity + options_.capacity / 32;
      std::vector<int64_t> ts;
      ts.reserve(used_);
      for (const Slot& s : table_) {
        if (s.fp != 0) ts.push_back(s.ts);
      }
      std::nth_element(ts.begin(), ts.begin() + static_cast<std::ptrdiff_t>(evict - 1), ts.end());
      floor_ms_ = std::max(floor_ms_, ts[evict - 1]);
      Rebuild(floor_ms_, oldest_allowed);
    }
  } else if (used_ * 4 > table_.size() * 3) {
    Rebuild(INT64_MIN, oldest_allowed);  // over 3/4 full: drop the expired, grow if still needed
  }
  return Status::Ok();
}

size_t ReplayWindow::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t oldest_allowed = SaturatingSub(latest_now_ms_, options_.window.count());
  size_t n = 0;
  for (const Slot& s : table_) n += s.fp != 0 && s.ts >= oldest_allowed;
  return n;
}

int64_t ReplayWindow::eviction_floor_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return floor_ms_;
}

}  // namespace flotilla::protocol
