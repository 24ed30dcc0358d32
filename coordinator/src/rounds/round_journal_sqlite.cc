#include <array>
#include <chrono>

#include "flotilla/coordinator/round_journal.h"
#include "flotilla/core/sqlite.h"

namespace flotilla::rounds {
namespace {

// Append-only: a schema change is a new migration.
constexpr std::array<sqlite::Migration, 1> kMigrations = {{
    {1, R"sql(
CREATE TABLE round_journal (
  id              TEXT PRIMARY KEY,
  grp             TEXT NOT NULL,
  state           TEXT NOT NULL,
  reason          TEXT NOT NULL DEFAULT '',
  spec_json       TEXT NOT NULL,
  created_ms      INTEGER NOT NULL,
  updated_ms      INTEGER NOT NULL,
  adapter_version TEXT NOT NULL DEFAULT '',
  adapter_sha256  BLOB
);
CREATE TABLE round_journal_participants (
  round_id     TEXT NOT NULL REFERENCES round_journal(id),
  device_id    TEXT NOT NULL,
  cohort_index INTEGER NOT NULL,
  last_stage   TEXT NOT NULL,
  last_status  TEXT NOT NULL,
  PRIMARY KEY (round_id, device_id)
);
CREATE TABLE round_journal_stages (
  round_id  TEXT NOT NULL,
  device_id TEXT NOT NULL,
  stage     TEXT NOT NULL,
  status    TEXT NOT NULL,
  PRIMARY KEY (round_id, device_id, stage),
  FOREIGN KEY (round_id, device_id) REFERENCES round_journal_participants(round_id, device_id)
);
CREATE TABLE round_journal_transitions (
  round_id   TEXT NOT NULL REFERENCES round_journal(id),
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  from_state TEXT NOT NULL,
  to_state   TEXT NOT NULL,
  reason     TEXT NOT NULL,
  at_ms      INTEGER NOT NULL
);
)sql"},
}};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<JournalRound> ReadRound(sqlite::Statement& st) {
  JournalRound r;
  r.id = st.ColumnText(0);
  r.group = st.ColumnText(1);
  FLT_ASSIGN_OR_RETURN(r.state, ParseRoundState(st.ColumnText(2)));
  r.reason = st.ColumnText(3);
  r.spec_json = st.ColumnText(4);
  r.created_ms = st.ColumnInt(5);
  r.updated_ms = st.ColumnInt(6);
  r.adapter_version = st.ColumnText(7);
  if (!st.ColumnIsNull(8)) r.adapter_sha256 = st.ColumnBlob(8);
  return r;
}

constexpr std::string_view kRoundColumns =
    "id, grp, state, reason, spec_json, created_ms, updated_ms, adapter_version, adapter_sha256";

}  // namespace

SqliteRoundJournal::SqliteRoundJournal(std::unique_ptr<sqlite::Database> db) : db_(std::move(db)) {}
SqliteRoundJournal::~SqliteRoundJournal() = default;

Result<std::unique_ptr<SqliteRoundJournal>> SqliteRoundJournal::Open(const std::filesystem::path& path) {
  sqlite::OpenOptions options;
  options.synchronous_full = true;  // a transition is durable before its side effect
  FLT_ASSIGN_OR_RETURN(auto db, sqlite::Database::Open(path, options));
  FLT_RETURN_IF_ERROR(db->Migrate(kMigrations));
  return std::unique_ptr<SqliteRoundJournal>(new SqliteRoundJournal(std::move(db)));
}

Status SqliteRoundJournal::Create(const JournalRound& round) {
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(auto exists, db_->Prepare("SELECT 1 FROM round_journal WHERE id = ?1"));
    exists.Bind(1, round.id);
    FLT_ASSIGN_OR_RETURN(bool found, exists.Step());
    if (found) return AlreadyExistsError("round '" + round.id + "' is already journaled");
    FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("INSERT INTO round_journal (id, grp, state, reason, spec_json, "
                                               "created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"));
    st.Bind(1, round.id)
        .Bind(2, round.group)
        .Bind(3, ToString(RoundState::kCreated))
        .Bind(4, round.reason)
        .Bind(5, round.spec_json)
        .Bind(6, round.created_ms != 0 ? round.created_ms : NowMs());
    return st.Run();
  });
}

Status SqliteRoundJournal::Transition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                                      std::span<const ParticipantStage> participants,
                                      const std::string* adapter_version, const Bytes* adapter_sha256) {
  const int64_t now = NowMs();
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(auto upd, db_->Prepare("UPDATE round_journal SET state = ?1, reason = ?2, updated_ms = ?3 "
                                                "WHERE id = ?4 AND state = ?5"));
    upd.Bind(1, ToString(to)).Bind(2, reason).Bind(3, now).Bind(4, id).Bind(5, ToString(from));
    FLT_RETURN_IF_ERROR(upd.Run());
    if (db_->Changes() != 1) {
      return AbortedError("round '" + std::string(id) + "' is not in state " + std::string(ToString(from)));
    }
    FLT_ASSIGN_OR_RETURN(auto hist, db_->Prepare("INSERT INTO round_journal_transitions (round_id, from_state, "
                                                 "to_state, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)"));
    hist.Bind(1, id).Bind(2, ToString(from)).Bind(3, ToString(to)).Bind(4, reason).Bind(5, now);
    FLT_RETURN_IF_ERROR(hist.Run());
    if (adapter_version != nullptr) {
      FLT_ASSIGN_OR_RETURN(auto res, db_->Prepare("UPDATE round_journal SET adapter_version = ?1, adapter_sha256 = ?2 "
                                                  "WHERE id = ?3"));
      res.Bind(1, *adapter_version).Bind(3, id);
      if (adapter_sha256 != nullptr) res.BindBlob(2, *adapter_sha256);
      else res.BindNull(2);
      FLT_RETURN_IF_ERROR(res.Run());
    }
    if (participants.empty()) return Status::Ok();
    FLT_ASSIGN_OR_RETURN(auto part, db_->Prepare(
                                        "INSERT INTO round_journal_participants (round_id, device_id, cohort_index, "
                                        "last_stage, last_status) VALUES (?1, ?2, ?3, ?4, ?5) "
                                        "ON CONFLICT(round_id, device_id) DO UPDATE SET last_stage = excluded.last_stage, "
                                        "last_status = excluded.last_status"));
    FLT_ASSIGN_OR_RETURN(auto stage, db_->Prepare("INSERT OR REPLACE INTO round_journal_stages (round_id, device_id, "
                                                  "stage, status) VALUES (?1, ?2, ?3, ?4)"));
    for (const ParticipantStage& p : participants) {
      part.Reset();
      part.Bind(1, id).Bind(2, p.device_id).Bind(3, static_cast<int64_t>(p.cohort_index)).Bind(4, p.stage).Bind(5, p.status);
      FLT_RETURN_IF_ERROR(part.Run());
      stage.Reset();
      stage.Bind(1, id).Bind(2, p.device_id).Bind(3, p.stage).Bind(4, p.status);
      FLT_RETURN_IF_ERROR(stage.Run());
    }
    return Status::Ok();
  });
}

Result<JournalRound> SqliteRoundJournal::Get(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT " + std::string(kRoundColumns) + " FROM round_journal WHERE id = ?1"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("round '" + std::string(id) + "' is not journaled");
  return ReadRound(st);
}

Result<std::vector<JournalRound>> SqliteRoundJournal::ListUnfinished() {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT " + std::string(kRoundColumns) +
                                             " FROM round_journal WHERE state NOT IN ('published', 'failed', "
                                             "'cancelled') ORDER BY created_ms, id"));
  std::vector<JournalRound> out;
  while (true) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    FLT_ASSIGN_OR_RETURN(JournalRound r, ReadRound(st));
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<JournalParticipant>> SqliteRoundJournal::Participants(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT device_id, cohort_index, last_stage, last_status FROM "
                                             "round_journal_participants WHERE round_id = ?1 ORDER BY cohort_index"));
  st.Bind(1, id);
  std::vector<JournalParticipant> out;
  while (true) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back({st.ColumnText(0), static_cast<uint32_t>(st.ColumnInt(1)), st.ColumnText(2), st.ColumnText(3)});
  }
  return out;
}

Result<std::vector<ParticipantStage>> SqliteRoundJournal::Stages(std::string_view id, std::string_view device_id) {
  FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT s.stage, s.status, p.cohort_index FROM round_journal_stages s "
                                             "JOIN round_journal_participants p USING (round_id, device_id) "
                                             "WHERE s.round_id = ?1 AND s.device_id = ?2 ORDER BY s.rowid"));
  st.Bind(1, id).Bind(2, device_id);
  std::vector<ParticipantStage> out;
  while (true) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back({std::string(device_id), static_cast<uint32_t>(st.ColumnInt(2)), st.ColumnText(0), st.ColumnText(1)});
  }
  return out;
}

Status SqliteRoundJournal::CheckInvariants() {
  FLT_RETURN_IF_ERROR(db_->IntegrityCheck());
  struct Rule {
    std::string_view what;
    std::string_view sql;
  };
  constexpr Rule kRules[] = {
      {"participant rows of an unknown round",
       "SELECT COUNT(*) FROM round_journal_participants WHERE round_id NOT IN (SELECT id FROM round_journal)"},
      {"stage rows without a participant",
       "SELECT COUNT(*) FROM round_journal_stages s WHERE NOT EXISTS (SELECT 1 FROM round_journal_participants p "
       "WHERE p.round_id = s.round_id AND p.device_id = s.device_id)"},
      {"failed or cancelled rounds without a reason",
       "SELECT COUNT(*) FROM round_journal WHERE state IN ('failed', 'cancelled') AND reason = ''"},
      {"aggregated or published rounds without an adapter version",
       "SELECT COUNT(*) FROM round_journal WHERE state IN ('aggregated', 'published') AND adapter_version = ''"},
      {"rounds in an unknown state",
       "SELECT COUNT(*) FROM round_journal WHERE state NOT IN ('created', 'selecting', 'training', 'share_keys', "
       "'masked_input', 'consistency_check', 'unmask', 'aggregated', 'published', 'failed', 'cancelled')"},
      {"duplicate cohort indexes in a round",
       "SELECT COUNT(*) FROM (SELECT round_id, cohort_index FROM round_journal_participants GROUP BY round_id, "
       "cohort_index HAVING COUNT(*) > 1)"},
  };
  for (const Rule& rule : kRules) {
    FLT_ASSIGN_OR_RETURN(auto st, db_->Prepare(rule.sql));
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && st.ColumnInt(0) != 0)
      return DataLossError("round journal: " + std::to_string(st.ColumnInt(0)) + " " + std::string(rule.what));
  }
  return Status::Ok();
}

}  // namespace flotilla::rounds
