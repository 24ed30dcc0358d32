#include "agent_store.h"

#include <array>
#include <cstring>

#include "flotilla/device/blob_client.h"

namespace flotilla::device {
namespace {

// Append-only: a new schema version is a new migration.
constexpr std::array<sqlite::Migration, 1> kMigrations = {{
    {1, R"sql(
CREATE TABLE agent_kv (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE agent_adapter (
  slot       INTEGER PRIMARY KEY CHECK (slot = 0),  -- one row: the current global adapter
  version    TEXT NOT NULL,
  sha256     BLOB NOT NULL,
  vector     BLOB NOT NULL,                         -- raw little-endian float32
  updated_ms INTEGER NOT NULL
);
CREATE TABLE agent_rounds (
  round_id     TEXT PRIMARY KEY,
  state        TEXT NOT NULL,
  cohort_index INTEGER NOT NULL DEFAULT 0,
  detail       TEXT NOT NULL DEFAULT '',
  updated_ms   INTEGER NOT NULL
);
)sql"},
}};

}  // namespace

Result<std::unique_ptr<AgentStore>> AgentStore::Open(const std::filesystem::path& path) {
  sqlite::OpenOptions options;
  // WAL + synchronous=NORMAL: a power cut may lose the last commits but never corrupts;
  // losing a participation record only makes the device skip that round, and a lost
  // adapter update is fetched again with the next round's invitation.
  options.synchronous_full = false;
  FLT_ASSIGN_OR_RETURN(auto db, sqlite::Database::Open(path, options));
  FLT_RETURN_IF_ERROR(db->Migrate(kMigrations));
  return std::unique_ptr<AgentStore>(new AgentStore(std::move(db)));
}

Result<std::optional<StoredAdapter>> AgentStore::LoadAdapter() {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT version, sha256, vector FROM agent_adapter WHERE slot = 0"));
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<StoredAdapter>();
  StoredAdapter a;
  a.version = st.ColumnText(0);
  a.sha256 = st.ColumnBlob(1);
  Bytes raw = st.ColumnBlob(2);
  auto values = DecodeAdapterVector(raw);
  if (!values.ok()) return DataLossError("agent.db: stored adapter is corrupt: " + values.status().message());
  a.values = std::move(*values);
  return std::optional<StoredAdapter>(std::move(a));
}

Status AgentStore::SaveAdapter(const StoredAdapter& adapter, int64_t now_ms) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare(
                                    "INSERT INTO agent_adapter (slot, version, sha256, vector, updated_ms) "
                                    "VALUES (0, ?1, ?2, ?3, ?4) ON CONFLICT(slot) DO UPDATE SET "
                                    "version = excluded.version, sha256 = excluded.sha256, "
                                    "vector = excluded.vector, updated_ms = excluded.updated_ms"));
  const Bytes raw = EncodeAdapterVector(adapter.values);
  st.Bind(1, adapter.version).BindBlob(2, adapter.sha256).BindBlob(3, raw).Bind(4, now_ms);
  return st.Run();
}

Result<std::optional<StoredRound>> AgentStore::GetRound(std::string_view round_id) {
  FLT_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT state, cohort_index, detail, updated_ms FROM agent_rounds WHERE round_id = ?1"));
  st.Bind(1, round_id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<StoredRound>();
  StoredRound r;
  r.round_id = std::string(round_id);
  r.state = st.ColumnText(0);
  r.cohort_index = static_cast<uint32_t>(st.ColumnInt(1));
  r.detail = st.ColumnText(2);
  r.updated_ms = st.ColumnInt(3);
  return std::optional<StoredRound>(std::move(r));
}

Status AgentStore::PutRound(const StoredRound& round) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare(
                                    "INSERT INTO agent_rounds (round_id, state, cohort_index, detail, updated_ms) "
                                    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(round_id) DO UPDATE SET "
                                    "state = excluded.state, cohort_index = excluded.cohort_index, "
                                    "detail = excluded.detail, updated_ms = excluded.updated_ms"));
  st.Bind(1, round.round_id)
      .Bind(2, round.state)
      .Bind(3, static_cast<int64_t>(round.cohort_index))
      .Bind(4, round.detail)
      .Bind(5, round.updated_ms);
  return st.Run();
}

Result<int64_t> AgentStore::AbandonUnfinished(std::string_view detail, int64_t now_ms) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("UPDATE agent_rounds SET state = 'abandoned', detail = ?1, "
                                             "updated_ms = ?2 WHERE state NOT IN "
                                             "('completed', 'aborted', 'declined', 'abandoned')"));
  st.Bind(1, detail).Bind(2, now_ms);
  FLT_RETURN_IF_ERROR(st.Run());
  return db_->Changes();
}

Result<uint64_t> AgentStore::CountRounds(std::string_view state) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT COUNT(*) FROM agent_rounds WHERE state = ?1"));
  st.Bind(1, state);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? static_cast<uint64_t>(st.ColumnInt(0)) : 0;
}

Result<std::optional<std::string>> AgentStore::GetValue(std::string_view key) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT value FROM agent_kv WHERE key = ?1"));
  st.Bind(1, key);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(st.ColumnText(0));
}

Status AgentStore::SetValue(std::string_view key, std::string_view value) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("INSERT INTO agent_kv (key, value) VALUES (?1, ?2) "
                                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
  st.Bind(1, key).Bind(2, value);
  return st.Run();
}

}  // namespace flotilla::device
