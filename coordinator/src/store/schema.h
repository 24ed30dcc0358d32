// The coordinator's SQLite schema as versioned migrations (Database::Migrate applies
// each pending one in its own transaction). RULES: a released migration is never
// edited; changes are new migrations appended with the next version number, and
// kStoreSchemaVersion (store.h) follows the newest.
#pragma once

#include <array>

#include "flotilla/core/sqlite.h"

namespace flotilla::coordinator::internal {

// Times are Unix milliseconds (INTEGER); hashes are lower-case hex (TEXT) so they read
// well in the sqlite3 shell; blobs are serialized protobuf.
inline constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE devices (
  id                  TEXT PRIMARY KEY,
  identity_public_key BLOB NOT NULL,
  certificate_pem     TEXT NOT NULL DEFAULT '',
  status              TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
  hardware            BLOB NOT NULL DEFAULT x'',
  firmware_version    TEXT NOT NULL DEFAULT '',
  sdk_version         TEXT NOT NULL DEFAULT '',
  first_seen_ms       INTEGER NOT NULL,
  last_seen_ms        INTEGER NOT NULL,
  presence            TEXT NOT NULL DEFAULT 'unknown' CHECK (presence IN ('unknown', 'online', 'offline')),
  session_id          TEXT NOT NULL DEFAULT '',
  presence_changed_ms INTEGER NOT NULL DEFAULT 0,
  reported_state      BLOB NOT NULL DEFAULT x'',
  reported_ms         INTEGER NOT NULL DEFAULT 0,
  revoked_ms          INTEGER NOT NULL DEFAULT 0,
  revoked_reason      TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX devices_presence ON devices (presence, status);

CREATE TABLE groups (
  name       TEXT PRIMARY KEY,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE device_groups (
  device_id  TEXT NOT NULL REFERENCES devices (id),
  group_name TEXT NOT NULL REFERENCES groups (name),
  PRIMARY KEY (device_id, group_name)
) WITHOUT ROWID;
CREATE INDEX device_groups_by_group ON device_groups (group_name, device_id);

CREATE TABLE enrolment_tokens (
  id         TEXT PRIMARY KEY,
  sha256     TEXT NOT NULL,
  device_id  TEXT NOT NULL DEFAULT '',
  groups     TEXT NOT NULL DEFAULT '',   -- comma-separated safe names
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  used_ms    INTEGER NOT NULL DEFAULT 0,
  used_by    TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE TABLE api_tokens (
  id         TEXT PRIMARY KEY,
  sha256     TEXT NOT NULL,
  name       TEXT NOT NULL,
  scopes     TEXT NOT NULL,              -- comma-separated
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE artifacts (
  sha256     TEXT PRIMARY KEY,
  size       INTEGER NOT NULL,
  path       TEXT NOT NULL,              -- relative to <data_dir>/artifacts
  media_type TEXT NOT NULL DEFAULT 'application/octet-stream',
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE rounds (
  id               TEXT PRIMARY KEY,
  group_name       TEXT NOT NULL DEFAULT '',
  state            TEXT NOT NULL,
  reason           TEXT NOT NULL DEFAULT '',
  config_json      TEXT NOT NULL DEFAULT '{}',
  created_ms       INTEGER NOT NULL,
  updated_ms       INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  cancel_reason    TEXT NOT NULL DEFAULT '',
  upload_secret    BLOB NOT NULL,
  aggregate_sha256 TEXT REFERENCES artifacts (sha256),
  result_version   TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX rounds_by_state ON rounds (state, created_ms);
CREATE INDEX rounds_by_created ON rounds (created_ms);

CREATE TABLE round_deadlines (
  round_id    TEXT NOT NULL REFERENCES rounds (id),
  stage       TEXT NOT NULL,
  deadline_ms INTEGER NOT NULL,
  PRIMARY KEY (round_id, stage)
) WITHOUT ROWID;

CREATE TABLE round_participants (
  round_id     TEXT NOT NULL REFERENCES rounds (id),
  device_id    TEXT NOT NULL REFERENCES devices (id),
  cohort_index INTEGER NOT NULL,
  updated_ms   INTEGER NOT NULL,
  PRIMARY KEY (round_id, device_id)
) WITHOUT ROWID;

CREATE TABLE participant_stages (
  round_id   TEXT NOT NULL,
  device_id  TEXT NOT NULL,
  stage      TEXT NOT NULL,
  status     TEXT NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (round_id, device_id, stage),
  FOREIGN KEY (round_id, device_id) REFERENCES round_participants (round_id, device_id)
) WITHOUT ROWID;

CREATE TABLE uploads (
  round_id   TEXT NOT NULL REFERENCES rounds (id),
  device_id  TEXT NOT NULL,
  sha256     TEXT NOT NULL REFERENCES artifacts (sha256),
  size       INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (round_id, device_id)
) WITHOUT ROWID;

CREATE TABLE model_versions (
  id           TEXT PRIMARY KEY,
  kind         TEXT NOT NULL,
  parent_id    TEXT REFERENCES model_versions (id),
  round_id     TEXT NOT NULL DEFAULT '',
  sha256       TEXT NOT NULL REFERENCES artifacts (sha256),
  size         INTEGER NOT NULL,
  metrics_json TEXT NOT NULL DEFAULT '{}',
  created_ms   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE adapter_versions (
  id            TEXT PRIMARY KEY,
  kind          TEXT NOT NULL,
  parent_id     TEXT REFERENCES adapter_versions (id),
  base_model_id TEXT REFERENCES model_versions (id),
  round_id      TEXT NOT NULL DEFAULT '',
  sha256        TEXT NOT NULL REFERENCES artifacts (sha256),
  size          INTEGER NOT NULL,
  metrics_json  TEXT NOT NULL DEFAULT '{}',
  created_ms    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit_log (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms       INTEGER NOT NULL,
  actor       TEXT NOT NULL,
  action      TEXT NOT NULL,
  subject     TEXT NOT NULL,
  detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE metrics_counters (
  name  TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
)sql";

// v2: the round engine looks up a device's participations (resume after restart).
inline constexpr std::string_view kSchemaV2 = R"sql(
CREATE INDEX round_participants_by_device ON round_participants (device_id, round_id);
CREATE INDEX uploads_by_sha ON uploads (sha256);
)sql";

// v3: the round engine journals into the store (StoreRoundJournal, one SQLite file for
// the coordinator's state):
//   rounds.spec_json        the engine's RoundSpec; '' while a REST-created round waits
//                           in the queue (the engine adopts it by filling this in)
//   round_participants.last_stage/last_status   each device's latest stage row
//   participant_stages.seq  commit order of a device's stage rows
//   registry_current        the version new rounds start from, per kind
inline constexpr std::string_view kSchemaV3 = R"sql(
ALTER TABLE rounds ADD COLUMN spec_json TEXT NOT NULL DEFAULT '';
ALTER TABLE round_participants ADD COLUMN last_stage TEXT NOT NULL DEFAULT '';
ALTER TABLE round_participants ADD COLUMN last_status TEXT NOT NULL DEFAULT '';
ALTER TABLE participant_stages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE registry_current (
  kind       TEXT PRIMARY KEY CHECK (kind IN ('model', 'adapter')),
  version_id TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
)sql";

inline constexpr std::array<sqlite::Migration, 3> kMigrations = {{
    {1, kSchemaV1},
    {2, kSchemaV2},
    {3, kSchemaV3},
}};

}  // namespace flotilla::coordinator::internal
