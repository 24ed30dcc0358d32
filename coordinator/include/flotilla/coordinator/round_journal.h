// RoundJournal: the durable record of every round the driver runs, written BEFORE each
// side effect (ARCHITECTURE.md section 8): state + reason per round, the cohort and each
// participant's status per stage, and the adapter version a round produced. A killed
// coordinator reopens the journal and resumes or fails each unfinished round
// (RoundDriver::Open). SqliteRoundJournal keeps it in its own tables (round_journal*),
// so it can live in the coordinator's database file or in a file of its own.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/coordinator/round_state.h"

namespace flotilla::sqlite {
class Database;
}

namespace flotilla::rounds {

struct JournalRound {
  std::string id;
  std::string group;
  RoundState state = RoundState::kCreated;
  std::string reason;            // why it failed / was cancelled
  std::string spec_json;         // the RoundSpec (round_spec.h), to resume after a restart
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::string adapter_version;   // set with kAggregated
  Bytes adapter_sha256;
};

// One participant's status in one stage ("ok", "dropped", "declined", ...).
struct ParticipantStage {
  std::string device_id;
  uint32_t cohort_index = 0;
  std::string stage;
  std::string status;
};

struct JournalParticipant {
  std::string device_id;
  uint32_t cohort_index = 0;
  std::string last_stage;   // the latest stage recorded for the device
  std::string last_status;
};

class RoundJournal {
 public:
  virtual ~RoundJournal() = default;
  // Records a new round (state kCreated). AlreadyExists for a known id.
  virtual Status Create(const JournalRound& round) = 0;
  // One transaction: state from -> to (Aborted, nothing written, if the stored state is not
  // `from`), the reason, every participant row, and the adapter result when given.
  virtual Status Transition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                            std::span<const ParticipantStage> participants, const std::string* adapter_version = nullptr,
                            const Bytes* adapter_sha256 = nullptr) = 0;
  // NotFound for an unknown id.
  virtual Result<JournalRound> Get(std::string_view id) = 0;
  // Rounds not in a terminal state, oldest first.
  virtual Result<std::vector<JournalRound>> ListUnfinished() = 0;
  // The cohort (devices with an index) and each one's latest stage status, by index.
  virtual Result<std::vector<JournalParticipant>> Participants(std::string_view id) = 0;
  // Per-stage rows of one device (tests and the REST view).
  virtual Result<std::vector<ParticipantStage>> Stages(std::string_view id, std::string_view device_id) = 0;
};

class SqliteRoundJournal final : public RoundJournal {
 public:
  // Opens (creating) the SQLite file at `path` (WAL, synchronous=FULL: a transition is on
  // disk before its side effect) and applies the journal's migrations.
  static Result<std::unique_ptr<SqliteRoundJournal>> Open(const std::filesystem::path& path);
  ~SqliteRoundJournal() override;

  Status Create(const JournalRound& round) override;
  Status Transition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                    std::span<const ParticipantStage> participants, const std::string* adapter_version = nullptr,
                    const Bytes* adapter_sha256 = nullptr) override;
  Result<JournalRound> Get(std::string_view id) override;
  Result<std::vector<JournalRound>> ListUnfinished() override;
  Result<std::vector<JournalParticipant>> Participants(std::string_view id) override;
  Result<std::vector<ParticipantStage>> Stages(std::string_view id, std::string_view device_id) override;

  // Invariants the tests and operators check after a crash: PRAGMA integrity_check, every
  // participant row belongs to a journaled round, terminal failed/cancelled rounds have a
  // reason, aggregated/published rounds have an adapter version. DataLoss naming the first
  // violation.
  Status CheckInvariants();

 private:
  explicit SqliteRoundJournal(std::unique_ptr<sqlite::Database> db);
  std::unique_ptr<sqlite::Database> db_;  // one connection: callers serialize (the driver's thread)
};

}  // namespace flotilla::rounds
