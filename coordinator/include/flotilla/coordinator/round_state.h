// The round lifecycle as an explicit state machine (ARCHITECTURE.md section 8,
// docs/rounds.md). The one vocabulary of round states: the coordinator's store
// (store.h) persists these names too.
//
//   state              event             next
//   kCreated           kAnnounce         kSelecting
//   kSelecting         kCohortSelected   kTraining          (invitations sent; devices train, then advertise keys)
//   kTraining          kStageClosed      kShareKeys         (U1 = devices that advertised keys)
//   kShareKeys         kStageClosed      kMaskedInput       (U2)
//   kMaskedInput       kStageClosed      kConsistencyCheck  (U3; hardened profile)
//   kMaskedInput       kStageClosed      kUnmask            (U3; curious profile)
//   kConsistencyCheck  kStageClosed      kUnmask            (U4)
//   kUnmask            kAggregated       kAggregated        (sum unmasked, new adapter stored)
//   kAggregated        kPublished        kPublished         (AggregateResult sent; terminal)
//   any non-terminal   kFail             kFailed            (terminal, with a reason)
//   any non-terminal   kCancel           kCancelled         (terminal, operator)
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "flotilla/core/status.h"

namespace flotilla::rounds {

// Append-only; persisted by name.
enum class RoundState : uint8_t {
  kCreated,
  kSelecting,
  kTraining,
  kShareKeys,
  kMaskedInput,
  kConsistencyCheck,
  kUnmask,
  kAggregated,
  kPublished,
  kFailed,
  kCancelled,
};

enum class RoundEvent : uint8_t { kAnnounce, kCohortSelected, kStageClosed, kAggregated, kPublished, kFail, kCancel };

std::string_view ToString(RoundState state);
std::string_view ToString(RoundEvent event);
// InvalidArgument for an unknown name.
Result<RoundState> ParseRoundState(std::string_view name);
bool IsTerminal(RoundState state);
// Every state, in declaration order (metrics report a gauge per state).
std::span<const RoundState> AllRoundStates();
// True while the coordinator holds SecAgg secrets in memory (training .. unmask): a
// restart in these states fails the round.
bool HoldsSecAggSecrets(RoundState state);
// The table above; true and *to set if (from, event) has a row.
bool RoundTransition(RoundState from, RoundEvent event, bool hardened, RoundState* to);

}  // namespace flotilla::rounds
