#include "flotilla/device/sample_store.h"

#include <cmath>
#include <utility>

#include "flotilla/core/random.h"
#include "model/utf8.h"

namespace flotilla::device {
namespace {

// Schema history is append-only: add a migration, never edit one that has shipped.
// `totals` is kept by triggers so the size check on every append is O(1) and stays right
// when several processes write the file.
constexpr sqlite::Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE samples (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_ms     INTEGER NOT NULL,
  text      TEXT NOT NULL,
  label     TEXT,
  bytes     INTEGER NOT NULL,
  split_key INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX samples_by_time ON samples(ts_ms, id);
CREATE INDEX samples_by_label ON samples(label, ts_ms, id);
CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO totals VALUES (1, 0, 0);
CREATE TRIGGER samples_count_insert AFTER INSERT ON samples BEGIN
  UPDATE totals SET count = count + 1, bytes = bytes + NEW.bytes WHERE id = 1;
END;
CREATE TRIGGER samples_count_delete AFTER DELETE ON samples BEGIN
  UPDATE totals SET count = count - 1, bytes = bytes - OLD.bytes WHERE id = 1;
END;
)sql"},
};

// SplitMix64's finalizer over salt and id: a well-mixed 53-bit key per sample. Not a
// secret-keyed MAC — the salt only has to make splits differ between stores.
uint64_t MixKey(uint64_t salt, int64_t id) {
  uint64_t z = salt + static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 31)) >> 11;
}

Status ValidateOptions(const SampleStoreOptions& o) {
  if (!(o.held_out_fraction >= 0.0 && o.held_out_fraction < 1.0)) {
    return InvalidArgumentError("held_out_fraction must be in [0, 1)");
  }
  if (o.max_total_bytes < 0 || o.max_age_ms < 0) return InvalidArgumentError("retention limits must not be negative");
  if (o.max_text_bytes <= 0 || o.max_label_bytes <= 0) {
    return InvalidArgumentError("max_text_bytes and max_label_bytes must be positive");
  }
  if (o.max_total_bytes > 0 && o.max_text_bytes > o.max_total_bytes) {
    return InvalidArgumentError("max_text_bytes (" + std::to_string(o.max_text_bytes) + ") exceeds max_total_bytes (" +
                                std::to_string(o.max_total_bytes) + ")");
  }
  return Status::Ok();
}

Status CheckUtf8(std::string_view s, const std::string& what) {
  const size_t bad = utf8::FirstInvalid(s);
  if (bad == std::string_view::npos) return Status::Ok();
  return InvalidArgumentError(what + " is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
}

std::string Where(size_t index) { return index == SIZE_MAX ? "sample" : "sample " + std::to_string(index); }

}  // namespace

SampleStore::SampleStore(std::unique_ptr<sqlite::Database> db, const SampleStoreOptions& options, uint64_t salt)
    : db_(std::move(db)),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : &RealClock()),
      salt_(salt),
      held_out_threshold_(static_cast<uint64_t>(std::ldexp(options.held_out_fraction, 53))) {}

SampleStore::~SampleStore() = default;

Result<std::unique_ptr<SampleStore>> SampleStore::Open(const std::filesystem::path& path,
                                                       const SampleStoreOptions& options) {
  FLT_RETURN_IF_ERROR(ValidateOptions(options));
  sqlite::OpenOptions open;
  open.synchronous_full = options.durable_appends;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db, sqlite::Database::Open(path, open));
  FLT_RETURN_IF_ERROR(db->Migrate(kMigrations).WithContext("sample store " + path.string()));
  // The split salt is made once, by a CSPRNG, and never changes (INSERT OR IGNORE keeps
  // the first one when two processes race to create the store).
  const uint64_t fresh = OsRandom().NextU64();
  int64_t salt = 0;
  const Status tx = db->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(sqlite::Statement ins, db->Prepare("INSERT OR IGNORE INTO meta(key, value) VALUES ('split_salt', ?)"));
    FLT_RETURN_IF_ERROR(ins.Bind(1, static_cast<int64_t>(fresh)).Run());
    FLT_ASSIGN_OR_RETURN(sqlite::Statement sel, db->Prepare("SELECT value FROM meta WHERE key = 'split_salt'"));
    FLT_ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) return DataLossError("sample store has no split salt");
    salt = sel.ColumnInt(0);
    return Status::Ok();
  });
  if (!tx.ok()) return tx;
  return std::unique_ptr<SampleStore>(new SampleStore(std::move(db), options, static_cast<uint64_t>(salt)));
}

uint64_t SampleStore::SplitKey(int64_t id) const { return MixKey(salt_, id); }

bool SampleStore::IsHeldOut(int64_t id) const { return SplitKey(id) < held_out_threshold_; }

Status SampleStore::ValidateSample(const NewSample& s, size_t index) const {
  const std::string where = Where(index);
  if (s.text.empty()) return InvalidArgumentError(where + ": text is empty");
  if (static_cast<int64_t>(s.text.size()) > options_.max_text_bytes) {
    return InvalidArgumentError(where + ": text is " + std::to_string(s.text.size()) + " bytes, the limit is " +
                                std::to_string(options_.max_text_bytes));
  }
  FLT_RETURN_IF_ERROR(CheckUtf8(s.text, where + ": text"));
  if (s.label.has_value()) {
    if (s.label->empty()) return InvalidArgumentError(where + ": label is empty (omit it instead)");
    if (static_cast<int64_t>(s.label->size()) > options_.max_label_bytes) {
      return InvalidArgumentError(where + ": label is " + std::to_string(s.label->size()) + " bytes, the limit is " +
                                  std::to_string(options_.max_label_bytes));
    }
    FLT_RETURN_IF_ERROR(CheckUtf8(*s.label, where + ": label"));
  }
  if (options_.max_age_ms > 0 && s.timestamp_ms < clock_->NowUnixMillis() - options_.max_age_ms) {
    return OutOfRangeError(where + ": timestamp " + std::to_string(s.timestamp_ms) +
                           " is older than the retention age (" + std::to_string(options_.max_age_ms) + " ms)");
  }
  return Status::Ok();
}

Result<int64_t> SampleStore::Append(std::string_view text, int64_t timestamp_ms, std::optional<std::string_view> label) {
  const NewSample s{text, timestamp_ms, label};
  FLT_ASSIGN_OR_RETURN(std::vector<int64_t> ids, AppendSamples(std::span<const NewSample>(&s, 1), SIZE_MAX));
  return ids[0];
}

Result<std::vector<int64_t>> SampleStore::AppendBatch(std::span<const NewSample> samples) {
  return AppendSamples(samples, 0);
}

Result<std::vector<int64_t>> SampleStore::AppendSamples(std::span<const NewSample> samples, size_t first_index) {
  for (size_t i = 0; i < samples.size(); ++i) {
    FLT_RETURN_IF_ERROR(ValidateSample(samples[i], first_index == SIZE_MAX ? SIZE_MAX : first_index + i));
  }
  std::vector<int64_t> ids;
  ids.reserve(samples.size());
  std::lock_guard<std::mutex> lock(mu_);
  const Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(sqlite::Statement ins,
                         db_->Prepare("INSERT INTO samples(ts_ms, text, label, bytes) VALUES (?, ?, ?, ?)"));
    // The key depends on the id, which AUTOINCREMENT assigns on insert.
    FLT_ASSIGN_OR_RETURN(sqlite::Statement key, db_->Prepare("UPDATE samples SET split_key = ? WHERE id = ?"));
    for (const NewSample& s : samples) {
      ins.Reset();
      ins.Bind(1, s.timestamp_ms).Bind(2, s.text).Bind(4, static_cast<int64_t>(s.text.size()));
      if (s.label.has_value()) {
        ins.Bind(3, *s.label);
      } else {
        ins.BindNull(3);
      }
      FLT_RETURN_IF_ERROR(ins.Run());
      const int64_t id = db_->LastInsertRowId();
      key.Reset();
      FLT_RETURN_IF_ERROR(key.Bind(1, static_cast<int64_t>(SplitKey(id))).Bind(2, id).Run());
      ids.push_back(id);
    }
    return ApplyRetentionLocked().status();
  });
  if (!tx.ok()) return tx;
  return ids;
}

Result<int64_t> SampleStore::ApplyRetention() {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t removed = 0;
  const Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(removed, ApplyRetentionLocked());
    return Status::Ok();
  });
  if (!tx.ok()) return tx;
  return removed;
}

Result<int64_t> SampleStore::ApplyRetentionLocked() {
  int64_t removed = 0;
  if (options_.max_age_ms > 0) {
    FLT_ASSIGN_OR_RETURN(sqlite::Statement del, db_->Prepare("DELETE FROM samples WHERE ts_ms < ?"));
    FLT_RETURN_IF_ERROR(del.Bind(1, clock_->NowUnixMillis() - options_.max_age_ms).Run());
    removed += db_->Changes();
  }
  if (options_.max_total_bytes > 0) {
    FLT_ASSIGN_OR_RETURN(sqlite::Statement tot, db_->Prepare("SELECT bytes FROM totals WHERE id = 1"));
    FLT_ASSIGN_OR_RETURN(bool row, tot.Step());
    if (!row) return DataLossError("sample store totals row is missing");
    int64_t excess = tot.ColumnInt(0) - options_.max_total_bytes;
    if (excess > 0) {
      // Oldest first, until the excess is gone; usually one or two rows.
      std::vector<int64_t> victims;
      FLT_ASSIGN_OR_RETURN(sqlite::Statement oldest, db_->Prepare("SELECT id, bytes FROM samples ORDER BY ts_ms, id"));
      while (excess > 0) {
        FLT_ASSIGN_OR_RETURN(bool more, oldest.Step());
        if (!more) break;
        victims.push_back(oldest.ColumnInt(0));
        excess -= oldest.ColumnInt(1);
      }
      FLT_ASSIGN_OR_RETURN(sqlite::Statement del, db_->Prepare("DELETE FROM samples WHERE id = ?"));
      for (int64_t id : victims) {
        del.Reset();
        FLT_RETURN_IF_ERROR(del.Bind(1, id).Run());
      }
      removed += static_cast<int64_t>(victims.size());
    }
  }
  return removed;
}

Result<std::vector<StoredSample>> SampleStore::Read(const SampleQuery& query) {
  std::string sql = "SELECT id, ts_ms, text, label, split_key FROM samples WHERE 1";
  if (query.split == SampleSplit::kTrain) sql += " AND split_key >= ?1";
  if (query.split == SampleSplit::kHeldOut) sql += " AND split_key < ?1";
  if (query.label.has_value()) sql += " AND label = ?2";
  sql += " ORDER BY ts_ms, id LIMIT ?3";
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(sqlite::Statement st, db_->Prepare(sql));
  if (query.split != SampleSplit::kAll) st.Bind(1, static_cast<int64_t>(held_out_threshold_));
  if (query.label.has_value()) st.Bind(2, *query.label);
  st.Bind(3, query.limit);
  std::vector<StoredSample> out;
  while (true) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    StoredSample s;
    s.id = st.ColumnInt(0);
    s.timestamp_ms = st.ColumnInt(1);
    s.text = st.ColumnText(2);
    if (!st.ColumnIsNull(3)) s.label = st.ColumnText(3);
    s.held_out = static_cast<uint64_t>(st.ColumnInt(4)) < held_out_threshold_;
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<std::string>> SampleStore::Texts(SampleSplit split, std::optional<std::string_view> label) {
  SampleQuery q;
  q.split = split;
  if (label.has_value()) q.label = std::string(*label);
  FLT_ASSIGN_OR_RETURN(std::vector<StoredSample> rows, Read(q));
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (StoredSample& s : rows) out.push_back(std::move(s.text));
  return out;
}

Result<std::vector<std::string>> SampleStore::TrainTexts(std::optional<std::string_view> label) {
  return Texts(SampleSplit::kTrain, label);
}

Result<std::vector<std::string>> SampleStore::HeldOutTexts(std::optional<std::string_view> label) {
  return Texts(SampleSplit::kHeldOut, label);
}

Result<SampleStoreStats> SampleStore::Stats(std::optional<std::string_view> label) {
  std::string sql =
      "SELECT COUNT(*), COALESCE(SUM(bytes), 0),"
      " COALESCE(SUM(split_key < ?1), 0), COALESCE(SUM(CASE WHEN split_key < ?1 THEN bytes ELSE 0 END), 0),"
      " COALESCE(MIN(ts_ms), 0), COALESCE(MAX(ts_ms), 0) FROM samples";
  if (label.has_value()) sql += " WHERE label = ?2";
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(sqlite::Statement st, db_->Prepare(sql));
  st.Bind(1, static_cast<int64_t>(held_out_threshold_));
  if (label.has_value()) st.Bind(2, *label);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return InternalError("sample statistics query returned no row");
  SampleStoreStats s;
  s.count = st.ColumnInt(0);
  s.bytes = st.ColumnInt(1);
  s.held_out_count = st.ColumnInt(2);
  s.held_out_bytes = st.ColumnInt(3);
  s.train_count = s.count - s.held_out_count;
  s.train_bytes = s.bytes - s.held_out_bytes;
  s.oldest_ms = st.ColumnInt(4);
  s.newest_ms = st.ColumnInt(5);
  return s;
}

Status SampleStore::Remove(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(sqlite::Statement del, db_->Prepare("DELETE FROM samples WHERE id = ?"));
  FLT_RETURN_IF_ERROR(del.Bind(1, id).Run());
  if (db_->Changes() == 0) return NotFoundError("no sample with id " + std::to_string(id));
  return Status::Ok();
}

Result<int64_t> SampleStore::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_RETURN_IF_ERROR(db_->Exec("DELETE FROM samples"));
  return db_->Changes();
}

}  // namespace flotilla::device
