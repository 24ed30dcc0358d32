#include "flotilla/coordinator/store_round_journal.h"

namespace flotilla::coordinator {
namespace {

Result<rounds::JournalRound> FromRecord(const RoundRecord& r) {
  rounds::JournalRound j;
  j.id = r.id;
  j.group = r.group;
  j.state = r.state;
  j.reason = r.reason;
  j.spec_json = r.spec_json;
  j.created_ms = r.created_ms;
  j.updated_ms = r.updated_ms;
  j.adapter_version = r.result_version;
  if (!r.aggregate_sha256.empty()) {
    FLT_ASSIGN_OR_RETURN(j.adapter_sha256, FromHex(r.aggregate_sha256));
  }
  return j;
}

}  // namespace

StoreRoundJournal::StoreRoundJournal(Store& store, std::string actor) : store_(store), actor_(std::move(actor)) {}

Status StoreRoundJournal::Create(const rounds::JournalRound& round) {
  FLT_RETURN_IF_ERROR(store_.CreateEngineRound(round.id, round.group, round.spec_json, actor_));
  Committed(rounds::RoundState::kCreated);
  return Status::Ok();
}

Status StoreRoundJournal::Transition(std::string_view id, rounds::RoundState from, rounds::RoundState to,
                                     std::string_view reason, std::span<const rounds::ParticipantStage> participants,
                                     const std::string* adapter_version, const Bytes* adapter_sha256) {
  std::string sha_hex;
  if (adapter_version != nullptr) {
    if (adapter_sha256 == nullptr || adapter_sha256->size() != 32) {
      return InvalidArgumentError("round journal: an adapter result needs its 32-byte sha256");
    }
    sha_hex = ToHex(*adapter_sha256);
  }
  FLT_RETURN_IF_ERROR(store_.JournalTransition(id, from, to, reason, participants, adapter_version, sha_hex, actor_));
  Committed(to);
  return Status::Ok();
}

Result<rounds::JournalRound> StoreRoundJournal::Get(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(RoundRecord r, store_.GetRound(id));
  return FromRecord(r);
}

Result<std::vector<rounds::JournalRound>> StoreRoundJournal::ListUnfinished() {
  FLT_ASSIGN_OR_RETURN(std::vector<RoundRecord> rows, store_.ListUnfinishedEngineRounds());
  std::vector<rounds::JournalRound> out;
  out.reserve(rows.size());
  for (const RoundRecord& r : rows) {
    FLT_ASSIGN_OR_RETURN(rounds::JournalRound j, FromRecord(r));
    out.push_back(std::move(j));
  }
  return out;
}

Result<std::vector<rounds::JournalParticipant>> StoreRoundJournal::Participants(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(std::vector<ParticipantRecord> rows, store_.ListParticipants(id));
  std::vector<rounds::JournalParticipant> out;
  out.reserve(rows.size());
  for (ParticipantRecord& p : rows) {
    out.push_back({std::move(p.device_id), p.cohort_index, std::move(p.last_stage), std::move(p.last_status)});
  }
  return out;
}

Result<std::vector<rounds::ParticipantStage>> StoreRoundJournal::Stages(std::string_view id,
                                                                        std::string_view device_id) {
  return store_.ParticipantStageHistory(id, device_id);
}

Status StoreRoundJournal::CheckInvariants() { return store_.CheckRoundInvariants(); }

}  // namespace flotilla::coordinator
