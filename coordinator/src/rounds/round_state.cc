#include "flotilla/coordinator/round_state.h"

#include <array>
#include <string>

namespace flotilla::rounds {
namespace {

constexpr std::array<std::pair<RoundState, std::string_view>, 11> kNames = {{
    {RoundState::kCreated, "created"},
    {RoundState::kSelecting, "selecting"},
    {RoundState::kTraining, "training"},
    {RoundState::kShareKeys, "share_keys"},
    {RoundState::kMaskedInput, "masked_input"},
    {RoundState::kConsistencyCheck, "consistency_check"},
    {RoundState::kUnmask, "unmask"},
    {RoundState::kAggregated, "aggregated"},
    {RoundState::kPublished, "published"},
    {RoundState::kFailed, "failed"},
    {RoundState::kCancelled, "cancelled"},
}};

}  // namespace

std::string_view ToString(RoundState state) {
  for (const auto& [s, name] : kNames) {
    if (s == state) return name;
  }
  return "unknown";
}

std::string_view ToString(RoundEvent event) {
  switch (event) {
    case RoundEvent::kAnnounce: return "announce";
    case RoundEvent::kCohortSelected: return "cohort_selected";
    case RoundEvent::kStageClosed: return "stage_closed";
    case RoundEvent::kAggregated: return "aggregated";
    case RoundEvent::kPublished: return "published";
    case RoundEvent::kFail: return "fail";
    case RoundEvent::kCancel: return "cancel";
  }
  return "unknown";
}

Result<RoundState> ParseRoundState(std::string_view name) {
  for (const auto& [s, n] : kNames) {
    if (n == name) return s;
  }
  return InvalidArgumentError("unknown round state '" + std::string(name) + "'");
}

std::span<const RoundState> AllRoundStates() {
  static constexpr std::array<RoundState, kNames.size()> kAll = [] {
    std::array<RoundState, kNames.size()> all{};
    for (size_t i = 0; i < kNames.size(); ++i) all[i] = kNames[i].first;
    return all;
  }();
  return kAll;
}

bool IsTerminal(RoundState state) {
  return state == RoundState::kPublished || state == RoundState::kFailed || state == RoundState::kCancelled;
}

bool HoldsSecAggSecrets(RoundState state) {
  switch (state) {
    case RoundState::kTraining:
    case RoundState::kShareKeys:
    case RoundState::kMaskedInput:
    case RoundState::kConsistencyCheck:
    case RoundState::kUnmask: return true;
    default: return false;
  }
}

bool RoundTransition(RoundState from, RoundEvent event, bool hardened, RoundState* to) {
  if (IsTerminal(from)) return false;
  RoundState next = from;
  switch (event) {
    case RoundEvent::kFail: next = RoundState::kFailed; break;
    case RoundEvent::kCancel: next = RoundState::kCancelled; break;
    case RoundEvent::kAnnounce:
      if (from != RoundState::kCreated) return false;
      next = RoundState::kSelecting;
      break;
    case RoundEvent::kCohortSelected:
      if (from != RoundState::kSelecting) return false;
      next = RoundState::kTraining;
      break;
    case RoundEvent::kStageClosed:
      switch (from) {
        case RoundState::kTraining: next = RoundState::kShareKeys; break;
        case RoundState::kShareKeys: next = RoundState::kMaskedInput; break;
        case RoundState::kMaskedInput: next = hardened ? RoundState::kConsistencyCheck : RoundState::kUnmask; break;
        case RoundState::kConsistencyCheck:
          if (!hardened) return false;
          next = RoundState::kUnmask;
          break;
        default: return false;
      }
      break;
    case RoundEvent::kAggregated:
      if (from != RoundState::kUnmask) return false;
      next = RoundState::kAggregated;
      break;
    case RoundEvent::kPublished:
      if (from != RoundState::kAggregated) return false;
      next = RoundState::kPublished;
      break;
  }
  if (to != nullptr) *to = next;
  return true;
}

}  // namespace flotilla::rounds
