// StoreRoundJournal: the round engine's journal (rounds::RoundJournal) kept in the
// coordinator's Store, so coordinator.db is the one file of the coordinator's state:
// the `rounds` row carries the state, reason, RoundSpec (spec_json) and result; the
// cohort and per-stage status live in `round_participants` / `participant_stages`, and
// every transition is audited. Each Transition is ONE SQLite transaction (state
// compare-and-set + reason + participant rows + adapter result + audit entry), committed
// (synchronous=FULL) before the driver performs its side effects.
//
// Queued rounds: POST /api/v1/rounds (and the service's scheduler) insert a row in state
// "created" with an empty spec. Create() with that id ADOPTS the row (fills in the spec)
// instead of failing AlreadyExists, so the service starts a queued round with
// RoundDriver::StartRound(spec with round_id = the row's id). ListUnfinished() returns
// engine rounds only (spec set), never the queue.
//
// Thread safety: as the Store (any thread); the driver calls it from its owner thread.
#pragma once

#include <functional>
#include <string>

#include "flotilla/coordinator/round_journal.h"
#include "flotilla/coordinator/store.h"

namespace flotilla::coordinator {

class StoreRoundJournal final : public rounds::RoundJournal {
 public:
  // `store` must outlive the journal. `actor` names the engine in the audit log.
  explicit StoreRoundJournal(Store& store, std::string actor = "engine");

  Status Create(const rounds::JournalRound& round) override;
  Status Transition(std::string_view id, rounds::RoundState from, rounds::RoundState to, std::string_view reason,
                    std::span<const rounds::ParticipantStage> participants, const std::string* adapter_version = nullptr,
                    const Bytes* adapter_sha256 = nullptr) override;
  Result<rounds::JournalRound> Get(std::string_view id) override;
  Result<std::vector<rounds::JournalRound>> ListUnfinished() override;
  Result<std::vector<rounds::JournalParticipant>> Participants(std::string_view id) override;
  Result<std::vector<rounds::ParticipantStage>> Stages(std::string_view id, std::string_view device_id) override;

  // Store::CheckRoundInvariants: integrity_check, foreign keys, participants belong to
  // rounds, failed/cancelled rounds have a reason, aggregated/published rounds have an
  // adapter version that exists in the adapter table, at most one running engine round
  // per group. DataLoss naming the first violation.
  Status CheckInvariants();

  // TEST ONLY (the service's FLOTILLA_TEST_CRASH_AFTER): called with the state a Create
  // or Transition entered, right after its transaction committed and before returning
  // to the driver (so before any side effect of that state).
  void SetCommitHook(std::function<void(rounds::RoundState)> hook) { commit_hook_ = std::move(hook); }

 private:
  void Committed(rounds::RoundState state) const {
    if (commit_hook_) commit_hook_(state);
  }
  Store& store_;
  std::string actor_;
  std::function<void(rounds::RoundState)> commit_hook_;
};

}  // namespace flotilla::coordinator
