// The device's local sample store: the host app appends text samples (text, timestamp,
// optional label) that never leave the device; the LoRA trainer reads them back split
// into train and held-out parts. One SQLite file (WAL, versioned schema).
//
//  * Retention: a limit on total text bytes and on age (sample timestamp vs. the Clock);
//    the oldest samples (by timestamp, then id) are dropped first, on every append and
//    on ApplyRetention().
//  * Split: a sample is held out when a keyed hash of its id (64-bit SplitMix-style mix
//    under a random per-store salt, made once by a CSPRNG and persisted in the file) falls
//    below held_out_fraction. Ids are never reused (AUTOINCREMENT), so a sample's side
//    never changes as others come and go, nor across reopen; changing the fraction moves
//    only samples whose hash lies between the old and new fractions.
//  * Input rules: text must be non-empty, valid UTF-8 and at most max_text_bytes; a label,
//    when given, non-empty valid UTF-8 of at most max_label_bytes. Anything else is
//    InvalidArgument saying what and where; nothing is stored.
//  * Crash safety: every append (or batch) is one transaction; a process killed mid-
//    append leaves the store as it was before that transaction.
//
// Thread safety: all methods are thread-safe (one connection guarded by a mutex). Several
// processes may open the same file (SQLite locking; byte totals are kept by triggers).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/clock.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/core/status.h"

namespace flotilla::device {

struct SampleStoreOptions {
  int64_t max_total_bytes = 64ll << 20;  // sum of text bytes kept; 0 = no limit
  int64_t max_age_ms = 0;                // 0 = no age limit
  int64_t max_text_bytes = 16 << 10;     // one sample's text
  int64_t max_label_bytes = 128;
  double held_out_fraction = 0.1;        // in [0, 1)
  Clock* clock = nullptr;                // nullptr = RealClock(); not owned, must outlive the store
  // false: WAL with synchronous=NORMAL — never corrupt, but a power cut may lose the last
  // few committed appends; one fsync per checkpoint instead of per append (flash wear,
  // ~100x faster appends). true: synchronous=FULL, every returned append is on disk.
  bool durable_appends = false;
};

struct NewSample {
  std::string_view text;
  int64_t timestamp_ms = 0;  // Unix milliseconds
  std::optional<std::string_view> label;
};

struct StoredSample {
  int64_t id = 0;
  std::string text;
  int64_t timestamp_ms = 0;
  std::optional<std::string> label;
  bool held_out = false;
};

enum class SampleSplit { kAll, kTrain, kHeldOut };

struct SampleQuery {
  SampleSplit split = SampleSplit::kAll;
  std::optional<std::string> label;  // only samples with exactly this label
  int64_t limit = -1;                // -1 = no limit; oldest first
};

struct SampleStoreStats {
  int64_t count = 0;
  int64_t bytes = 0;  // text bytes
  int64_t train_count = 0;
  int64_t train_bytes = 0;
  int64_t held_out_count = 0;
  int64_t held_out_bytes = 0;
  int64_t oldest_ms = 0;  // 0 when empty
  int64_t newest_ms = 0;
};

class SampleStore {
 public:
  // Opens or creates the store at `path` (migrating the schema, making the salt on first
  // open). InvalidArgument for bad options (fraction outside [0,1), max_text_bytes larger
  // than a non-zero max_total_bytes, negative limits); Unavailable/DataLoss from SQLite.
  static Result<std::unique_ptr<SampleStore>> Open(const std::filesystem::path& path,
                                                   const SampleStoreOptions& options = {});
  ~SampleStore();
  SampleStore(const SampleStore&) = delete;
  SampleStore& operator=(const SampleStore&) = delete;

  // Stores one sample and applies retention; returns its id. InvalidArgument for bad text
  // or label (see the rules above); OutOfRange when the timestamp is already beyond the
  // age limit (it would be dropped at once). A back-dated sample that is the oldest may be
  // the one the size limit drops.
  Result<int64_t> Append(std::string_view text, int64_t timestamp_ms,
                         std::optional<std::string_view> label = std::nullopt);
  // All or nothing: validates every sample first (the error names the index), then stores
  // them in one transaction and applies retention once. Ids in input order.
  Result<std::vector<int64_t>> AppendBatch(std::span<const NewSample> samples);

  // Samples matching the query, oldest first (timestamp, then id).
  Result<std::vector<StoredSample>> Read(const SampleQuery& query = {});
  // Just the texts of the train / held-out part, oldest first, optionally one label only.
  Result<std::vector<std::string>> TrainTexts(std::optional<std::string_view> label = std::nullopt);
  Result<std::vector<std::string>> HeldOutTexts(std::optional<std::string_view> label = std::nullopt);
  // Counts and bytes, optionally for one label.
  Result<SampleStoreStats> Stats(std::optional<std::string_view> label = std::nullopt);

  // Drops samples beyond the age and size limits now; returns how many were dropped.
  Result<int64_t> ApplyRetention();
  // Removes one sample (NotFound if absent) / every sample (returns how many).
  Status Remove(int64_t id);
  Result<int64_t> Clear();

  // Whether a sample with this id is (or would be) held out under the current fraction.
  bool IsHeldOut(int64_t id) const;
  const SampleStoreOptions& options() const { return options_; }

 private:
  SampleStore(std::unique_ptr<sqlite::Database> db, const SampleStoreOptions& options, uint64_t salt);
  Result<std::vector<std::string>> Texts(SampleSplit split, std::optional<std::string_view> label);
  // `index` names the sample in errors; SIZE_MAX for a single Append.
  Status ValidateSample(const NewSample& s, size_t index) const;
  Result<std::vector<int64_t>> AppendSamples(std::span<const NewSample> samples, size_t first_index);
  Result<int64_t> ApplyRetentionLocked();  // REQUIRES: mu_ held, inside a transaction
  uint64_t SplitKey(int64_t id) const;

  mutable std::mutex mu_;
  std::unique_ptr<sqlite::Database> db_;  // GUARDED_BY(mu_)
  const SampleStoreOptions options_;
  Clock* const clock_;
  const uint64_t salt_;
  const uint64_t held_out_threshold_;  // split key < threshold → held out
};

}  // namespace flotilla::device
