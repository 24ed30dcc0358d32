#include "flotilla/coordinator/round_driver.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <set>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/secagg_server.h"
#include "flotilla/core/check.h"
#include "flotilla/core/log.h"
#include "flotilla/core/spool.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/replay_window.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"

namespace flotilla::rounds {

namespace v1 = ::flotilla::v1;
using aggregation::SecAggServer;
using protocol::OpenedEnvelope;
using protocol::Topic;

namespace {

constexpr std::string_view kLog = "rounds";

// Stage names in the journal's participant rows.
std::string_view StageName(RoundState s) {
  switch (s) {
    case RoundState::kTraining: return "advertise_keys";
    case RoundState::kShareKeys: return "share_keys";
    case RoundState::kMaskedInput: return "masked_input";
    case RoundState::kConsistencyCheck: return "consistency_check";
    case RoundState::kUnmask: return "unmask";
    default: return ToString(s);
  }
}

bool MeetsMinimum(const v1::Eligibility& e, const v1::Eligibility& min) {
  return (!min.charging() || e.charging()) && (!min.idle() || e.idle()) &&
         (!min.unmetered_link() || e.unmetered_link()) && e.free_memory_bytes() >= min.free_memory_bytes() &&
         e.battery_percent() >= min.battery_percent();
}

std::string Bitmap(uint32_t n, const std::vector<uint32_t>& members) {
  std::string bits((n + 7) / 8, '\0');
  for (uint32_t i : members) {
    if (i >= 1 && i <= n) bits[(i - 1) / 8] = static_cast<char>(bits[(i - 1) / 8] | (1 << ((i - 1) % 8)));
  }
  return bits;
}

int64_t MillisSince(std::chrono::steady_clock::time_point t, const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.SteadyNow() - t).count();
}

}  // namespace

// The round in flight. Owner thread only.
struct ActiveRound {
  std::string id;
  RoundSpec spec;
  RoundState state = RoundState::kCreated;
  bool hardened = true;
  int64_t deadline_ms = 0;  // of the current phase (wall clock, as on the wire)
  std::chrono::steady_clock::time_point started, stage_started;
  bool need_announce = false;

  std::vector<std::string> check_ins;
  std::set<std::string, std::less<>> checked_in;

  std::vector<std::string> cohort;                      // [index - 1]
  std::map<std::string, uint32_t, std::less<>> index_of;
  GlobalAdapter start;
  v1::SecAggConfig config;
  v1::TrainingConfig training;
  security::X25519KeyPair box{};
  std::unique_ptr<SecAggServer> server;
  uint64_t m = 0;

  std::vector<uint8_t> declined;  // [index]
  std::vector<uint8_t> gone;      // [index] device aborted
  std::vector<uint8_t> expected;  // [index] current stage
  std::vector<uint8_t> answered;  // [index] current stage (accepted by the server)
  std::vector<uint8_t> resent;    // [index] current stage message re-sent on a duplicate
  int64_t next_retransmit_ms = 0; // wall clock; the stage's messages go again to the silent
  int retransmits = 0;
  uint32_t expected_count = 0;
  uint32_t settled_count = 0;     // answered + declined + gone among expected
  // The current stage's sealed messages, re-sent (byte for byte: receivers drop exact
  // duplicates) to whoever has not answered. The bytes live in a spool file, one per stage.
  struct SentMessage {
    std::string topic;
    uint64_t offset = 0;
    size_t size = 0;
  };
  std::map<uint32_t, SentMessage> stage_out;
  std::unique_ptr<Spool> stage_spool;
  std::vector<uint32_t> survivors;  // U3
};

struct RoundDriver::Impl {
  explicit Impl(RoundDriverOptions o)
      : options(std::move(o)),
        clock(options.clock != nullptr ? *options.clock : RealClock()),
        random(options.random != nullptr ? *options.random : OsRandom()),
        crypto(options.crypto != nullptr ? *options.crypto : aggregation::CoordinatorCryptoSuite()),
        replay(protocol::ReplayWindow::Options{std::chrono::minutes(10), options.replay_capacity}) {
    open_options.recipients.push_back(options.coordinator_id);
  }

  // ---- plumbing
  void Reject(std::string_view what, const Status& why);
  template <typename Msg>
  Result<std::pair<std::string, Bytes>> SealFor(const std::string& device_id, const Msg& msg);
  template <typename Msg>
  Status SendTo(const std::string& device_id, const Msg& msg, int64_t expiry_ms, uint32_t remember_index = 0);
  Status Publish(const std::string& topic, const Bytes& wire, int64_t expiry_ms);
  // Publishes the kept stage message of cohort index i again.
  void PublishKept(uint32_t index, const ActiveRound::SentMessage& sent);
  void UpdateStatus(const std::function<void(RoundStatus&)>& fn);
  void SyncStatus();

  // ---- lifecycle
  Status Recover();
  Status Announce();
  void CloseSelection();
  void OpenStage(RoundState state, std::vector<uint32_t> expected, int64_t deadline_ms);
  void CloseStage();
  void Aggregate();
  Status PublishResult(const std::vector<JournalParticipant>* recovered);
  void Fail(v1::AbortReason reason, const std::string& detail, RoundState terminal = RoundState::kFailed);
  Status Transition(RoundState to, std::string_view reason, std::span<const ParticipantStage> participants,
                    const std::string* version = nullptr, const Bytes* sha = nullptr);
  // One row per device expected at `stage`; room for `extra` more rows is reserved.
  std::vector<ParticipantStage> StageRows(std::string_view stage, size_t extra = 0) const;
  void MaybeCloseEarly();

  // ---- inbound
  void OnCheckIn(const OpenedEnvelope& env);
  void OnResponse(const OpenedEnvelope& env);
  void OnDeviceAbort(const OpenedEnvelope& env);
  void OnSecAgg(const OpenedEnvelope& env);
  void MarkAnswered(uint32_t index);
  // After a reconnect: the announcement (selecting) or the current stage's messages to
  // devices that have not answered (receivers drop exact duplicates).
  void Resend();
  void ResendTo(const std::string& device_id);
  // A quarter of the stage timeout: a stage message (or its answer) lost with a broken
  // connection is retried up to three times before the deadline.
  int64_t RetransmitInterval() const {
    return std::max<int64_t>(round ? round->spec.stage_timeout.count() / 4 : 0, 250);
  }
  void Retransmit();
  void FlushRecovery();

  RoundDriverOptions options;
  const Clock& clock;
  Random& random;
  const aggregation::CryptoSuite& crypto;
  protocol::ReplayWindow replay;
  protocol::OpenOptions open_options;
  bool attached = false;
  bool lost_connection = false;

  std::unique_ptr<ActiveRound> round;
  // Recovered rounds to abort once connected: (device id, message).
  std::vector<std::pair<std::string, v1::RoundAbort>> pending_aborts;
  // An aggregated round recovered from the journal: published on the next Tick.
  bool resume_publish = false;
  std::vector<JournalParticipant> recovered_participants;
  v1::RoundAnnouncement announcement;  // the last one sent (re-sent after a reconnect)

  mutable std::mutex mu;
  std::map<std::string, RoundStatus, std::less<>> statuses;  // GUARDED_BY(mu)
  RoundDriverStats counters;                                  // GUARDED_BY(mu)
};

// ---------------------------------------------------------------- plumbing

void RoundDriver::Impl::Reject(std::string_view what, const Status& why) {
  FLT_LOG(kWarn, kLog) << "dropped " << what << ": " << why.ToString();
  std::lock_guard<std::mutex> lock(mu);
  ++counters.messages_rejected;
}

template <typename Msg>
Result<std::pair<std::string, Bytes>> RoundDriver::Impl::SealFor(const std::string& device_id, const Msg& msg) {
  const protocol::PayloadType type = protocol::PayloadTypeOf<Msg>::value;
  const protocol::PayloadRoute* route = nullptr;
  for (const auto& r : protocol::RoutesFor(type)) {
    if (r.kind == protocol::TopicKind::kCommand) route = &r;
  }
  if (route == nullptr) return InternalError("no command route for " + protocol::PayloadTypeName(type));
  FLT_ASSIGN_OR_RETURN(std::string topic, protocol::FormatTopic(Topic::Command(device_id, std::string(route->name))));
  FLT_ASSIGN_OR_RETURN(Bytes wire, protocol::SealMessage(*options.signer, msg, device_id, clock, random));
  return std::make_pair(std::move(topic), std::move(wire));
}

Status RoundDriver::Impl::Publish(const std::string& topic, const Bytes& wire, int64_t expiry_ms) {
  protocol::PublishOptions po;
  po.qos = 1;
  const int64_t left_s = (expiry_ms - clock.NowUnixMillis()) / 1000 + 1;
  po.message_expiry_seconds = expiry_ms > 0 ? static_cast<uint32_t>(std::clamp<int64_t>(left_s, 1, 86400)) : 0;
  Status s = options.transport->Publish(topic, wire, po);
  std::lock_guard<std::mutex> lock(mu);
  if (s.ok()) {
    ++counters.messages_sent;
    counters.bytes_out += wire.size();
  }
  return s;
}

template <typename Msg>
Status RoundDriver::Impl::SendTo(const std::string& device_id, const Msg& msg, int64_t expiry_ms,
                                 uint32_t remember_index) {
  FLT_ASSIGN_OR_RETURN(auto sealed, SealFor(device_id, msg));
  Status s = Publish(sealed.first, sealed.second, expiry_ms);
  if (remember_index != 0 && round && round->stage_spool) {
    auto at = round->stage_spool->Append(sealed.second);
    if (at.ok()) {
      round->stage_out[remember_index] = {std::move(sealed.first), *at, sealed.second.size()};
    } else {
      FLT_LOG(kWarn, kLog) << "keeping the message to " << device_id << " for re-sends: " << at.status().ToString();
    }
  }
  if (!s.ok()) {
    FLT_LOG(kWarn, kLog) << "send to " << device_id << " failed (re-sent after a reconnect): " << s.ToString();
  }
  return s;
}

void RoundDriver::Impl::UpdateStatus(const std::function<void(RoundStatus&)>& fn) {
  if (!round) return;
  std::lock_guard<std::mutex> lock(mu);
  RoundStatus& st = statuses[round->id];
  st.round_id = round->id;
  fn(st);
}

void RoundDriver::Impl::SyncStatus() {
  UpdateStatus([&](RoundStatus& st) {
    st.state = round->state;
    st.check_ins = static_cast<uint32_t>(round->check_ins.size());
    st.cohort = static_cast<uint32_t>(round->cohort.size());
    st.declined = static_cast<uint32_t>(std::count(round->declined.begin(), round->declined.end(), 1));
    st.duration_ms = MillisSince(round->started, clock);
  });
}

Status RoundDriver::Impl::Transition(RoundState to, std::string_view reason,
                                     std::span<const ParticipantStage> participants, const std::string* version,
                                     const Bytes* sha) {
  FLT_RETURN_IF_ERROR(options.journal->Transition(round->id, round->state, to, reason, participants, version, sha));
  round->state = to;
  SyncStatus();
  return Status::Ok();
}

std::vector<ParticipantStage> RoundDriver::Impl::StageRows(std::string_view stage, size_t extra) const {
  std::vector<ParticipantStage> rows;
  rows.reserve(round->cohort.size() + extra);
  for (uint32_t i = 1; i <= round->cohort.size(); ++i) {
    if (!round->expected[i]) continue;
    const char* st = round->answered[i] ? "ok" : round->declined[i] ? "declined" : round->gone[i] ? "aborted" : "dropped";
    rows.push_back({round->cohort[i - 1], i, std::string(stage), st});
  }
  return rows;
}

// ---------------------------------------------------------------- open / recover

RoundDriver::RoundDriver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RoundDriver::~RoundDriver() {
  if (impl_->attached) {
    // The transport outlives us: its handlers must not call into a dead driver.
    impl_->options.transport->SetMessageHandler(nullptr);
    impl_->options.transport->SetConnectionStateHandler(nullptr);
  }
}

Result<std::unique_ptr<RoundDriver>> RoundDriver::Open(RoundDriverOptions options) {
  if (options.transport == nullptr || !options.signer || !options.verifier || options.journal == nullptr ||
      options.adapters == nullptr)
    return InvalidArgumentError("RoundDriver: transport, signer, verifier, journal and adapters are required");
  FLT_RETURN_IF_ERROR(protocol::ValidateName("coordinator id", options.coordinator_id));
  if (options.signer->identity() != options.coordinator_id)
    return InvalidArgumentError("RoundDriver: signer identity is not the coordinator id");
  auto impl = std::make_unique<Impl>(std::move(options));
  FLT_RETURN_IF_ERROR(impl->Recover());
  return std::unique_ptr<RoundDriver>(new RoundDriver(std::move(impl)));
}

Status RoundDriver::Impl::Recover() {
  FLT_ASSIGN_OR_RETURN(std::vector<JournalRound> unfinished, options.journal->ListUnfinished());
  for (size_t k = 0; k < unfinished.size(); ++k) {
    const JournalRound& jr = unfinished[k];
    FLT_ASSIGN_OR_RETURN(RoundSpec spec, RoundSpecFromJson(jr.spec_json));
    auto r = std::make_unique<ActiveRound>();
    r->id = jr.id;
    r->spec = spec;
    r->state = jr.state;
    r->hardened = spec.profile != v1::SEC_AGG_PROFILE_CURIOUS;
    r->started = r->stage_started = clock.SteadyNow();
    round = std::move(r);
    SyncStatus();
    const bool newest = k + 1 == unfinished.size();
    if (HoldsSecAggSecrets(jr.state) || (!newest && jr.state != RoundState::kAggregated)) {
      const std::string reason = HoldsSecAggSecrets(jr.state)
                                     ? "coordinator restarted during " + std::string(StageName(jr.state))
                                     : "coordinator restarted; superseded by a newer round";
      FLT_ASSIGN_OR_RETURN(auto participants, options.journal->Participants(jr.id));
      FLT_RETURN_IF_ERROR(Transition(RoundState::kFailed, reason, {}));
      v1::RoundAbort abort;
      abort.set_round_id(jr.id);
      abort.set_reason(v1::ABORT_REASON_INTERNAL);
      abort.set_detail(reason);
      for (const auto& p : participants) {
        if (p.last_status != "declined") pending_aborts.emplace_back(p.device_id, abort);
      }
      UpdateStatus([&](RoundStatus& st) { st.reason = reason; });
      FLT_LOG(kWarn, kLog) << "round " << jr.id << " failed: " << reason;
      round.reset();
    } else if (jr.state == RoundState::kAggregated) {
      FLT_ASSIGN_OR_RETURN(auto participants, options.journal->Participants(jr.id));
      FLT_ASSIGN_OR_RETURN(round->start, options.adapters->Get(jr.adapter_version));  // the new version
      FLT_RETURN_IF_ERROR(options.adapters->SetCurrent(jr.adapter_version));
      if (!newest) {
        // An older aggregated round (cannot happen with one round at a time): its adapter
        // is promoted; record it published without re-sending.
        FLT_RETURN_IF_ERROR(Transition(RoundState::kPublished, "recovered after restart", {}));
        round.reset();
        continue;
      }
      // Published once the transport is up (Tick); keep the participants for it.
      recovered_participants = std::move(participants);
      resume_publish = true;
      FLT_LOG(kInfo, kLog) << "round " << jr.id << " recovered as aggregated; publishing its result";
    } else {
      // created / selecting: nothing secret was lost; announce again (check-ins restart).
      round->need_announce = true;
      FLT_LOG(kInfo, kLog) << "round " << jr.id << " resumes in " << ToString(jr.state);
    }
  }
  return Status::Ok();
}

Status RoundDriver::Attach() {
  Impl& s = *impl_;
  s.options.transport->SetMessageHandler([this](const protocol::Message& m) { HandleMessage(m); });
  s.options.transport->SetConnectionStateHandler([&s](protocol::ConnectionState state, const Status&) {
    if (state == protocol::ConnectionState::kReconnecting || state == protocol::ConnectionState::kDisconnected) {
      s.lost_connection = true;
    } else if (state == protocol::ConnectionState::kConnected && s.lost_connection) {
      s.lost_connection = false;
      s.Resend();
    }
  });
  for (std::string_view kind : {protocol::topic_names::kRoundEvent, protocol::topic_names::kSecAggEvent}) {
    const std::string filter = std::string(protocol::kTopicPrefix) + "/d/+/up/event/" + std::string(kind);
    FLT_RETURN_IF_ERROR(s.options.transport->Subscribe(filter, 1));
  }
  s.attached = true;
  return Status::Ok();
}

void RoundDriver::Impl::PublishKept(uint32_t index, const ActiveRound::SentMessage& sent) {
  auto wire = round->stage_spool->Read(sent.offset, sent.size);
  if (!wire.ok()) {
    FLT_LOG(kWarn, kLog) << "re-sending to " << index << ": " << wire.status().ToString();
    return;
  }
  Publish(sent.topic, *wire, round->deadline_ms).IgnoreError();
}

void RoundDriver::Impl::Resend() {
  if (!round) return;
  if (round->state == RoundState::kSelecting) {
    round->need_announce = true;  // Tick re-announces with the same deadline
    return;
  }
  for (const auto& [index, sent] : round->stage_out) {
    if (index < round->answered.size() && (round->answered[index] || round->gone[index])) continue;
    PublishKept(index, sent);
  }
}

void RoundDriver::Impl::Retransmit() {
  ActiveRound& r = *round;
  if (r.retransmits >= 3 || clock.NowUnixMillis() < r.next_retransmit_ms) return;
  ++r.retransmits;
  r.next_retransmit_ms = clock.NowUnixMillis() + RetransmitInterval();
  uint32_t count = 0;
  for (const auto& [index, sent] : r.stage_out) {
    if (r.answered[index] || r.gone[index] || r.declined[index]) continue;
    PublishKept(index, sent);
    ++count;
  }
  if (count > 0) {
    FLT_LOG(kInfo, kLog) << "round " << r.id << ": " << ToString(r.state) << " message re-sent to " << count
                         << " silent device(s)";
  }
}

void RoundDriver::Impl::ResendTo(const std::string& device_id) {
  if (!round || !HoldsSecAggSecrets(round->state)) return;
  auto it = round->index_of.find(device_id);
  if (it == round->index_of.end()) return;
  const uint32_t i = it->second;
  auto out = round->stage_out.find(i);
  if (out == round->stage_out.end() || round->answered[i] || round->resent[i]) return;
  round->resent[i] = 1;
  PublishKept(i, out->second);
}

void RoundDriver::Impl::FlushRecovery() {
  if (options.transport->state() != protocol::ConnectionState::kConnected) return;
  for (const auto& [device, abort] : pending_aborts) SendTo(device, abort, 0).IgnoreError();
  pending_aborts.clear();
  if (resume_publish && round && round->state == RoundState::kAggregated) {
    resume_publish = false;
    Status s = PublishResult(&recovered_participants);
    if (!s.ok()) {
      FLT_LOG(kError, kLog) << "publishing recovered round " << round->id << ": " << s.ToString();
    }
    recovered_participants.clear();
  }
  if (round && round->need_announce) {
    Status s = Announce();
    if (!s.ok()) Fail(v1::ABORT_REASON_INTERNAL, "announcement failed: " + s.message());
  }
}

// ---------------------------------------------------------------- start / announce / select

Result<std::string> RoundDriver::StartRound(RoundSpec spec) {
  Impl& s = *impl_;
  if (s.round) return FailedPreconditionError("round '" + s.round->id + "' is still running");
  FLT_RETURN_IF_ERROR(protocol::ValidateName("group", spec.group));
  if (spec.base_model.sha256().size() != 32) return InvalidArgumentError("round spec: base model sha256 must be 32 bytes");
  if (spec.target_cohort < 2 || spec.min_cohort < 2 || spec.min_cohort > spec.target_cohort)
    return InvalidArgumentError("round spec: need 2 <= min_cohort <= target_cohort");
  FLT_ASSIGN_OR_RETURN(GlobalAdapter current, s.options.adapters->Current());
  if (current.values.empty()) return FailedPreconditionError("the current adapter has no trainable values");
  if (spec.round_id.empty()) {
    Bytes r(4);
    s.random.Fill(r);
    spec.round_id = "r" + std::to_string(s.clock.NowUnixMillis()) + "-" + ToHex(r);
  }
  FLT_RETURN_IF_ERROR(protocol::ValidateName("round id", spec.round_id));
  JournalRound jr;
  jr.id = spec.round_id;
  jr.group = spec.group;
  jr.spec_json = RoundSpecToJson(spec);
  jr.created_ms = s.clock.NowUnixMillis();
  FLT_RETURN_IF_ERROR(s.options.journal->Create(jr));
  auto r = std::make_unique<ActiveRound>();
  r->id = spec.round_id;
  r->spec = std::move(spec);
  r->hardened = r->spec.profile != v1::SEC_AGG_PROFILE_CURIOUS;
  r->started = r->stage_started = s.clock.SteadyNow();
  r->need_announce = true;
  s.round = std::move(r);
  s.SyncStatus();
  s.FlushRecovery();  // announces now when connected, else on the next Tick
  return s.round ? s.round->id : jr.id;
}

Status RoundDriver::Impl::Announce() {
  ActiveRound& r = *round;
  if (r.state == RoundState::kCreated) {
    FLT_RETURN_IF_ERROR(Transition(RoundState::kSelecting, "", {}));
    r.deadline_ms = clock.NowUnixMillis() + r.spec.check_in_timeout.count();
  } else if (r.deadline_ms == 0 || r.deadline_ms < clock.NowUnixMillis()) {
    // Resumed after a restart: the check-in window starts over.
    r.deadline_ms = clock.NowUnixMillis() + r.spec.check_in_timeout.count();
    r.check_ins.clear();
    r.checked_in.clear();
  }
  FLT_ASSIGN_OR_RETURN(GlobalAdapter current, options.adapters->Current());
  v1::RoundAnnouncement a;
  a.set_round_id(r.id);
  a.set_group(r.spec.group);
  *a.mutable_base_model() = r.spec.base_model;
  a.set_adapter_version(current.version);
  a.set_check_in_deadline_ms(r.deadline_ms);
  *a.mutable_min_eligibility() = r.spec.min_eligibility;
  a.set_target_cohort_size(r.spec.target_cohort);
  FLT_ASSIGN_OR_RETURN(std::string topic, protocol::FormatTopic(Topic::GroupRound(r.spec.group)));
  FLT_ASSIGN_OR_RETURN(Bytes wire, protocol::SealMessage(*options.signer, a, protocol::GroupRecipient(r.spec.group),
                                                         clock, random));
  r.need_announce = false;
  r.stage_started = clock.SteadyNow();
  return Publish(topic, wire, r.deadline_ms);
}

void RoundDriver::Impl::CloseSelection() {
  ActiveRound& r = *round;
  const uint32_t have = static_cast<uint32_t>(r.check_ins.size());
  UpdateStatus([&](RoundStatus& st) {
    st.stages.push_back({"check_in", MillisSince(r.stage_started, clock), have, r.spec.target_cohort});
  });
  if (have < r.spec.min_cohort) {
    return Fail(v1::ABORT_REASON_TOO_FEW_PARTICIPANTS,
                "too few check-ins: " + std::to_string(have) + " < min_cohort " + std::to_string(r.spec.min_cohort));
  }
  // Sample the cohort (partial Fisher-Yates with the CSPRNG).
  const uint32_t n = std::min(have, r.spec.target_cohort);
  std::vector<std::string> pool = r.check_ins;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t j = i + random.Uniform(pool.size() - i);
    std::swap(pool[i], pool[j]);
  }
  pool.resize(n);
  r.cohort = std::move(pool);
  for (uint32_t i = 0; i < n; ++i) r.index_of[r.cohort[i]] = i + 1;
  // Sized with the cohort: a failure from here on (Fail) walks the cohort.
  r.declined.assign(n + 1, 0);
  r.gone.assign(n + 1, 0);

  auto current = options.adapters->Current();
  if (!current.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "no current adapter: " + current.status().message());
  r.start = std::move(*current);
  r.m = r.start.values.size() + 1;  // + the FedAvg weight

  aggregation::RoundPlan plan;
  plan.round_id = r.id;
  plan.n = n;
  plan.max_colluding_fraction = r.spec.max_colluding_fraction;
  plan.max_dropout_rate = r.spec.max_dropout_rate;
  plan.profile = r.spec.profile;
  plan.bit_width = r.spec.bit_width;
  plan.clip_bound = r.spec.clip_bound;
  plan.model_sha256 = ToBytes(r.spec.base_model.sha256());
  plan.min_survivors = r.spec.min_survivors;
  auto config = aggregation::PlanRound(plan, random);
  if (!config.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "SecAgg parameters: " + config.status().message());
  r.config = std::move(*config);
  *r.config.mutable_dp() = r.spec.dp;
  const int64_t now = clock.NowUnixMillis();
  const int64_t stage = r.spec.stage_timeout.count();
  v1::StageDeadlines* d = r.config.mutable_deadlines();
  d->set_advertise_keys_ms(now + r.spec.training_timeout.count());
  d->set_share_keys_ms(d->advertise_keys_ms() + stage);
  d->set_masked_input_ms(d->share_keys_ms() + stage);
  d->set_consistency_check_ms(r.hardened ? d->masked_input_ms() + stage : 0);
  d->set_unmask_ms((r.hardened ? d->consistency_check_ms() : d->masked_input_ms()) + stage);

  auto box = crypto.GenerateKeyPair(random);
  if (!box.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "box key: " + box.status().message());
  r.box = *box;
  aggregation::SecAggServerOptions so;
  so.config = r.config;
  so.vector_length = r.m;
  so.device_ids = r.cohort;
  so.verifier = options.verifier;
  so.box_key = r.box;
  so.crypto = &crypto;
  so.threads = options.unmask_threads;
  so.spool_dir = options.spool_dir;
  so.random = &random;
  auto server = SecAggServer::Open(std::move(so));
  if (!server.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "SecAgg server: " + server.status().message());
  r.server = std::move(*server);

  r.training = r.spec.training;
  r.training.set_base_model_sha256(r.spec.base_model.sha256());
  r.training.set_adapter_version(r.start.version);
  r.training.set_adapter_url(r.start.url);
  r.training.set_adapter_sha256(r.start.sha256.data(), r.start.sha256.size());
  r.training.set_trainable_length(r.start.values.size());

  std::vector<ParticipantStage> rows;
  rows.reserve(n);
  for (uint32_t i = 1; i <= n; ++i) rows.push_back({r.cohort[i - 1], i, "selected", "ok"});
  if (Status s = Transition(RoundState::kTraining, "", rows); !s.ok())
    return Fail(v1::ABORT_REASON_INTERNAL, "journal: " + s.message());

  std::vector<uint32_t> all(n);
  for (uint32_t i = 0; i < n; ++i) all[i] = i + 1;
  OpenStage(RoundState::kTraining, all, d->advertise_keys_ms());
  for (uint32_t i = 1; i <= n; ++i) {
    v1::RoundInvitation inv;
    inv.set_round_id(r.id);
    *inv.mutable_training() = r.training;
    auto cfg = r.server->ConfigFor(i);
    if (!cfg.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "config for " + std::to_string(i) + ": " + cfg.status().message());
    *inv.mutable_secagg() = std::move(*cfg);
    inv.set_coordinator_box_public_key(r.box.public_key.data(), r.box.public_key.size());
    if (options.uploads != nullptr) {
      auto target = options.uploads->TargetFor(r.id, r.cohort[i - 1]);
      if (target.ok()) *inv.mutable_upload() = std::move(*target);
    }
    inv.set_accept_deadline_ms(d->advertise_keys_ms());
    SendTo(r.cohort[i - 1], inv, d->advertise_keys_ms(), i).IgnoreError();
  }
  FLT_LOG(kInfo, kLog) << "round " << r.id << ": cohort of " << n << " from " << have << " check-ins (k="
                       << r.config.k() << ", t=" << r.config.t() << ", m=" << r.m << ")";
}

// ---------------------------------------------------------------- stages

void RoundDriver::Impl::OpenStage(RoundState state, std::vector<uint32_t> expected, int64_t deadline_ms) {
  ActiveRound& r = *round;
  const size_t n = r.cohort.size();
  r.expected.assign(n + 1, 0);
  r.answered.assign(n + 1, 0);
  r.resent.assign(n + 1, 0);
  r.expected_count = 0;
  r.settled_count = 0;
  for (uint32_t i : expected) {
    r.expected[i] = 1;
    ++r.expected_count;
    if (r.gone[i] || r.declined[i]) ++r.settled_count;
  }
  r.stage_out.clear();
  r.stage_spool.reset();  // the previous stage's file goes away
  auto spool = Spool::Create(options.spool_dir);
  if (spool.ok()) {
    r.stage_spool = std::move(*spool);
  } else {
    // Re-sends are then impossible this stage (first sends are unaffected).
    FLT_LOG(kWarn, kLog) << "round " << r.id << ": no spool for " << ToString(state) << " messages: "
                         << spool.status().ToString();
  }
  // The invitation announced absolute deadlines assuming every stage runs to its end; a
  // stage opened early (the previous one closed when all had answered) still gets only
  // stage_timeout, so one silent device never costs more than that.
  r.deadline_ms = state == RoundState::kTraining
                      ? deadline_ms
                      : std::min(deadline_ms, clock.NowUnixMillis() + r.spec.stage_timeout.count());
  r.retransmits = 0;
  r.next_retransmit_ms = clock.NowUnixMillis() + RetransmitInterval();
  r.stage_started = clock.SteadyNow();
}

void RoundDriver::Impl::MarkAnswered(uint32_t index) {
  ActiveRound& r = *round;
  if (index == 0 || index >= r.expected.size() || !r.expected[index] || r.answered[index]) return;
  r.answered[index] = 1;
  if (!r.gone[index] && !r.declined[index]) ++r.settled_count;
}

void RoundDriver::Impl::MaybeCloseEarly() {
  if (round && HoldsSecAggSecrets(round->state) && round->settled_count >= round->expected_count) CloseStage();
}

void RoundDriver::Impl::CloseStage() {
  ActiveRound& r = *round;
  const RoundState was = r.state;
  const std::string stage(StageName(was));
  uint32_t answered = 0;
  for (uint32_t i = 1; i < r.answered.size(); ++i) answered += r.answered[i];
  UpdateStatus([&](RoundStatus& st) {
    st.stages.push_back({stage, MillisSince(r.stage_started, clock), answered, r.expected_count});
  });
  const std::vector<ParticipantStage> rows = StageRows(stage);
  const v1::StageDeadlines& d = r.config.deadlines();
  // The server's Close* checks the abort rule; a failure ends the round.
  auto fail_server = [&](const Status& s) {
    const v1::RoundAbort a = r.server->AbortMessage();
    Fail(a.reason() != v1::ABORT_REASON_UNSPECIFIED ? a.reason() : v1::ABORT_REASON_TOO_FEW_SURVIVORS,
         "SecAgg " + stage + ": " + s.message());
  };
  auto journal = [&](RoundState to) -> bool {
    Status s = Transition(to, "", rows);
    if (!s.ok()) Fail(v1::ABORT_REASON_INTERNAL, "journal: " + s.message());
    return s.ok();
  };
  // Journals `to`, opens it for `recipients` and sends each its message, built on demand
  // by `build`: with n x k neighbour entries in a stage, only one message is in memory at
  // a time, and what is kept for re-sends is in the stage's spool file.
  auto advance = [&](RoundState to, const std::vector<uint32_t>& recipients, int64_t deadline,
                     const auto& build) -> bool {
    if (!journal(to)) return false;
    OpenStage(to, recipients, deadline);
    for (uint32_t i : recipients) {
      auto msg = build(i);
      if (!msg.ok()) {
        // Cannot happen for a recipient the server named; the device counts as dropped.
        FLT_LOG(kError, kLog) << "round " << r.id << ": message to " << i << ": " << msg.status().ToString();
        continue;
      }
      Status sent = SendTo(r.cohort[i - 1], *msg, deadline, i);
      if (sent.code() == StatusCode::kResourceExhausted) {
        // Over the MQTT payload cap: no re-send can deliver it, and the cohort's other
        // messages of this stage are about as large. Fail now, with the reason.
        Fail(v1::ABORT_REASON_INTERNAL,
             "the " + std::string(StageName(to)) + " message to " + r.cohort[i - 1] +
                 " is over the MQTT payload cap (" + sent.message() +
                 "); hardened adverts carrying certificates fit about 190 neighbours: provision peer keys "
                 "(advertise_certificate off) or use a smaller cohort");
        return false;
      }
    }
    return true;
  };
  switch (was) {
    case RoundState::kTraining: {
      auto out = r.server->CloseAdvertiseKeys();
      if (!out.ok()) return fail_server(out.status());
      if (!advance(RoundState::kShareKeys, *out, d.share_keys_ms(),
                   [&](uint32_t i) { return r.server->NeighbourKeysFor(i); }))
        return;
      break;
    }
    case RoundState::kShareKeys: {
      auto out = r.server->CloseShareKeys();
      if (!out.ok()) return fail_server(out.status());
      if (!advance(RoundState::kMaskedInput, *out, d.masked_input_ms(),
                   [&](uint32_t i) { return r.server->ForwardedSharesFor(i); }))
        return;
      break;
    }
    case RoundState::kMaskedInput: {
      auto out = r.server->CloseMaskedInput();
      if (!out.ok()) return fail_server(out.status());
      for (uint32_t i = 1; i < r.answered.size(); ++i) {
        if (r.answered[i]) r.survivors.push_back(i);
      }
      UpdateStatus([&](RoundStatus& st) { st.survivors = static_cast<uint32_t>(r.survivors.size()); });
      auto unmask_request = [&](uint32_t i) { return r.server->UnmaskRequestFor(i); };
      if (!out->consistency) {
        if (!advance(RoundState::kUnmask, out->recipients, d.unmask_ms(), unmask_request)) return;
        break;
      }
      // Hardened: the same ConsistencyCheckRequest for every member of U3.
      const v1::ConsistencyCheckRequest& request = *out->consistency;
      if (!advance(RoundState::kConsistencyCheck, out->recipients, d.consistency_check_ms(),
                   [&](uint32_t) -> Result<v1::ConsistencyCheckRequest> { return request; }))
        return;
      break;
    }
    case RoundState::kConsistencyCheck: {
      auto out = r.server->CloseConsistencyCheck();
      if (!out.ok()) return fail_server(out.status());
      if (!advance(RoundState::kUnmask, *out, d.unmask_ms(),
                   [&](uint32_t i) { return r.server->UnmaskRequestFor(i); }))
        return;
      break;
    }
    case RoundState::kUnmask: return Aggregate();
    default: return;
  }
  // An empty stage (everybody already gone) closes at once; the server's rule decides.
  MaybeCloseEarly();
}

void RoundDriver::Impl::Aggregate() {
  ActiveRound& r = *round;
  const auto t0 = clock.SteadyNow();
  auto out = r.server->Finish();
  if (!out.ok()) {
    return Fail(v1::ABORT_REASON_TOO_FEW_SURVIVORS, "SecAgg unmask: " + out.status().message());
  }
  // The sum is out: the server's per-device state and share spools are not needed any
  // more (late SecAgg messages are refused as "no round in a SecAgg stage").
  r.server.reset();
  std::vector<ParticipantStage> rows = StageRows("unmask", r.cohort.size());  // + the "aggregated" rows below
  const aggregation::FixedPointConfig fp{r.config.bit_width(), r.config.quant_bits(), r.config.clip_bound()};
  const std::vector<double> decoded = aggregation::DecodeFixedPointSum(out->sum, fp);
  auto mean = aggregation::WeightedAverageFromSum(decoded);
  if (!mean.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "decode: " + mean.status().message());
  std::vector<float> next(r.start.values.size());
  std::vector<float> mean_delta(next.size());
  for (size_t i = 0; i < next.size(); ++i) {
    mean_delta[i] = static_cast<float>((*mean)[i]);
    next[i] = static_cast<float>(static_cast<double>(r.start.values[i]) + (*mean)[i]);
  }
  const double weight_sum = decoded.empty() ? 0.0 : decoded.back();
  UpdateStatus([&](RoundStatus& st) { st.unmask_ms = MillisSince(t0, clock); });
  if (options.test_hook) {
    RoundTestRecord rec;
    rec.round_id = r.id;
    for (uint32_t i : out->survivors) rec.survivors.push_back(r.cohort[i - 1]);
    rec.sum = out->sum;
    rec.mean_delta = mean_delta;
    rec.previous = r.start.values;
    rec.next = next;
    options.test_hook(rec);
  }
  AdapterMetrics metrics;
  metrics.cohort = static_cast<uint32_t>(r.cohort.size());
  metrics.survivors = static_cast<uint32_t>(out->survivors.size());
  metrics.examples = weight_sum;
  metrics.duration_ms = MillisSince(r.started, clock);
  double norm2 = 0;
  for (float d : mean_delta) norm2 += static_cast<double>(d) * static_cast<double>(d);
  metrics.l2_norm_delta = std::sqrt(norm2);
  auto stored = options.adapters->Put(r.id, r.start.version, next, metrics);
  if (!stored.ok()) return Fail(v1::ABORT_REASON_INTERNAL, "storing the adapter: " + stored.status().message());
  std::set<uint32_t> u3(out->survivors.begin(), out->survivors.end());
  for (uint32_t i = 1; i <= r.cohort.size(); ++i) {
    rows.push_back({r.cohort[i - 1], i, "aggregated", u3.count(i) ? "survivor" : r.declined[i] ? "declined" : "dropped"});
  }
  r.survivors = out->survivors;
  if (Status s = Transition(RoundState::kAggregated, "", rows, &stored->version, &stored->sha256); !s.ok())
    return Fail(v1::ABORT_REASON_INTERNAL, "journal: " + s.message());
  if (Status s = options.adapters->SetCurrent(stored->version); !s.ok()) {
    FLT_LOG(kError, kLog) << "round " << r.id << ": promoting " << stored->version << ": " << s.ToString();
  }
  r.start = std::move(*stored);  // from here on: the round's result
  UpdateStatus([&](RoundStatus& st) {
    st.adapter_version = r.start.version;
    st.survivors = static_cast<uint32_t>(r.survivors.size());
  });
  FLT_LOG(kInfo, kLog) << "round " << r.id << ": aggregated " << r.survivors.size() << " of " << r.cohort.size()
                       << " (weight " << weight_sum << ") into " << r.start.version;
  Status s = PublishResult(nullptr);
  if (!s.ok()) {
    FLT_LOG(kError, kLog) << "round " << r.id << ": publishing: " << s.ToString();
  }
}

// Sends AggregateResult to every cohort member that did not decline, then records
// kPublished. Sending first is safe (devices treat a repeat as a duplicate), and a crash
// in between re-publishes on restart.
Status RoundDriver::Impl::PublishResult(const std::vector<JournalParticipant>* recovered) {
  ActiveRound& r = *round;
  std::vector<std::pair<std::string, uint32_t>> to;
  std::vector<uint32_t> survivors;
  uint32_t n = 0;
  if (recovered != nullptr) {
    for (const auto& p : *recovered) {
      n = std::max(n, p.cohort_index);
      if (p.last_status != "declined") to.emplace_back(p.device_id, p.cohort_index);
      if (p.last_status == "survivor") survivors.push_back(p.cohort_index);
    }
  } else {
    n = static_cast<uint32_t>(r.cohort.size());
    for (uint32_t i = 1; i <= n; ++i) {
      if (!r.declined[i]) to.emplace_back(r.cohort[i - 1], i);
    }
    survivors = r.survivors;
  }
  v1::AggregateResult res;
  res.set_round_id(r.id);
  res.set_new_adapter_version(r.start.version);
  res.set_adapter_sha256(r.start.sha256.data(), r.start.sha256.size());
  res.set_adapter_url(r.start.url);
  res.set_n(n);
  res.set_survivors_bitmap(Bitmap(n, survivors));
  v1::RoundMetrics* m = res.mutable_metrics();
  m->set_survivors(static_cast<uint32_t>(survivors.size()));
  m->set_dropped(n - static_cast<uint32_t>(survivors.size()));
  m->set_duration_ms(static_cast<uint64_t>(MillisSince(r.started, clock)));
  const int64_t expiry = clock.NowUnixMillis() + 10 * 60 * 1000;
  for (const auto& [device, index] : to) SendTo(device, res, expiry).IgnoreError();
  FLT_RETURN_IF_ERROR(Transition(RoundState::kPublished, "", {}));
  UpdateStatus([&](RoundStatus& st) { st.duration_ms = MillisSince(r.started, clock); });
  round.reset();
  return Status::Ok();
}

void RoundDriver::Impl::Fail(v1::AbortReason reason, const std::string& detail, RoundState terminal) {
  ActiveRound& r = *round;
  FLT_LOG(kWarn, kLog) << "round " << r.id << " " << ToString(terminal) << " in " << ToString(r.state) << ": " << detail;
  // Journal first; if even that fails the round is still over in memory (the journal
  // fails it again on the next start, since it is then in a SecAgg stage or resumable).
  Status s = options.journal->Transition(r.id, r.state, terminal, detail, {});
  if (!s.ok()) {
    FLT_LOG(kError, kLog) << "round " << r.id << ": journal: " << s.ToString();
  }
  if (r.server) r.server->Abort(reason, detail);
  v1::RoundAbort abort;
  abort.set_round_id(r.id);
  abort.set_reason(reason);
  abort.set_detail(detail);
  for (uint32_t i = 1; i <= r.cohort.size(); ++i) {
    if (!r.declined[i] && !r.gone[i]) SendTo(r.cohort[i - 1], abort, clock.NowUnixMillis() + 60000).IgnoreError();
  }
  r.state = terminal;
  SyncStatus();
  UpdateStatus([&](RoundStatus& st) { st.reason = detail; });
  round.reset();
}

Status RoundDriver::Cancel(std::string_view round_id, std::string_view reason) {
  Impl& s = *impl_;
  if (!s.round || s.round->id != round_id) return NotFoundError("no running round '" + std::string(round_id) + "'");
  s.Fail(v1::ABORT_REASON_OPERATOR, reason.empty() ? "cancelled by the operator" : std::string(reason),
         RoundState::kCancelled);
  return Status::Ok();
}

// ---------------------------------------------------------------- inbound

void RoundDriver::HandleMessage(const protocol::Message& message) {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.counters.bytes_in += message.payload.size();
  }
  auto topic = protocol::ParseTopic(message.topic);
  if (!topic.ok()) return s.Reject("message on a bad topic", topic.status());
  if (topic->kind != protocol::TopicKind::kEvent ||
      (topic->name != protocol::topic_names::kRoundEvent && topic->name != protocol::topic_names::kSecAggEvent))
    return;  // not a round message
  if (s.options.device_allowed && !s.options.device_allowed(topic->device_id))
    return s.Reject("message from " + topic->device_id, PermissionDeniedError("device is not allowed (revoked or unknown)"));
  auto opened = protocol::Open(message.payload, *s.options.verifier, s.clock, s.open_options);
  if (!opened.ok()) return s.Reject("envelope on " + message.topic, opened.status());
  if (Status b = protocol::CheckTopicBinding(*topic, *opened); !b.ok()) return s.Reject("envelope on " + message.topic, b);
  if (Status r = s.replay.Check(*opened, s.clock); !r.ok()) {
    {
      std::lock_guard<std::mutex> lock(s.mu);
      ++s.counters.messages_duplicate;
    }
    // Devices re-send their last message after a reconnect. If this one has not answered
    // the current stage, it probably lost our stage message with its connection (a broker
    // restart loses sessions): send it again, once per stage.
    if (r.code() == StatusCode::kAlreadyExists) s.ResendTo(opened->sender_id);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.counters.messages_accepted;
  }
  switch (opened->payload_type) {
    case v1::PAYLOAD_TYPE_ROUND_CHECK_IN: return s.OnCheckIn(*opened);
    case v1::PAYLOAD_TYPE_ROUND_RESPONSE: return s.OnResponse(*opened);
    case v1::PAYLOAD_TYPE_ROUND_ABORT: return s.OnDeviceAbort(*opened);
    case v1::PAYLOAD_TYPE_TRAINING_METRICS: return;  // informational
    default: return s.OnSecAgg(*opened);
  }
}

void RoundDriver::Impl::OnCheckIn(const OpenedEnvelope& env) {
  auto c = protocol::UnpackPayload<v1::RoundCheckIn>(env);
  if (!c.ok()) return Reject("check-in from " + env.sender_id, c.status());
  if (!round || round->id != c->round_id() || round->state != RoundState::kSelecting)
    return Reject("check-in from " + env.sender_id, FailedPreconditionError("round '" + c->round_id() + "' is not selecting"));
  if (c->base_model().sha256() != round->spec.base_model.sha256())
    return Reject("check-in from " + env.sender_id, FailedPreconditionError("wrong base model hash"));
  if (!MeetsMinimum(c->eligibility(), round->spec.min_eligibility))
    return Reject("check-in from " + env.sender_id, FailedPreconditionError("below the round's minimum eligibility"));
  if (!round->checked_in.insert(env.sender_id).second) return;  // a repeated check-in
  round->check_ins.push_back(env.sender_id);
  SyncStatus();
  if (round->check_ins.size() >= round->spec.target_cohort) CloseSelection();
}

void RoundDriver::Impl::OnResponse(const OpenedEnvelope& env) {
  auto resp = protocol::UnpackPayload<v1::RoundResponse>(env);
  if (!resp.ok()) return Reject("response from " + env.sender_id, resp.status());
  if (!round || round->id != resp->round_id()) return Reject("response from " + env.sender_id, FailedPreconditionError("wrong round"));
  auto it = round->index_of.find(env.sender_id);
  if (it == round->index_of.end()) return Reject("response from " + env.sender_id, PermissionDeniedError("not in the cohort"));
  if (resp->accepted() || round->state != RoundState::kTraining) return;
  const uint32_t i = it->second;
  if (round->declined[i]) return;
  FLT_LOG(kInfo, kLog) << "round " << round->id << ": " << env.sender_id << " declined ("
                       << v1::DeclineReason_Name(resp->reason()) << ": " << resp->detail() << ")";
  round->declined[i] = 1;
  if (round->expected[i] && !round->answered[i]) ++round->settled_count;
  SyncStatus();
  MaybeCloseEarly();
}

void RoundDriver::Impl::OnDeviceAbort(const OpenedEnvelope& env) {
  auto a = protocol::UnpackPayload<v1::RoundAbort>(env);
  if (!a.ok()) return Reject("abort from " + env.sender_id, a.status());
  if (!round || round->id != a->round_id()) return;
  auto it = round->index_of.find(env.sender_id);
  if (it == round->index_of.end()) return;
  const uint32_t i = it->second;
  FLT_LOG(kInfo, kLog) << "round " << round->id << ": " << env.sender_id << " aborted ("
                       << v1::AbortReason_Name(a->reason()) << ": " << a->detail() << ")";
  if (round->gone[i]) return;
  round->gone[i] = 1;
  if (round->expected[i] && !round->answered[i] && !round->declined[i]) ++round->settled_count;
  MaybeCloseEarly();
}

void RoundDriver::Impl::OnSecAgg(const OpenedEnvelope& env) {
  const std::string what = protocol::PayloadTypeName(env.payload_type) + " from " + env.sender_id;
  if (!round || !round->server) return Reject(what, FailedPreconditionError("no round in a SecAgg stage"));
  auto it = round->index_of.find(env.sender_id);
  if (it == round->index_of.end()) return Reject(what, PermissionDeniedError("not in the cohort"));
  const uint32_t idx = it->second;
  SecAggServer& server = *round->server;
  // Each message must be for this round and carry the sender's own index.
  auto check = [&](const std::string& round_id, uint32_t index) -> Status {
    if (round_id != round->id) return FailedPreconditionError("for round '" + round_id + "', not '" + round->id + "'");
    if (index != idx) return PermissionDeniedError("claims index " + std::to_string(index) + ", sender has " + std::to_string(idx));
    return Status::Ok();
  };
  Status s;
  switch (env.payload_type) {
    case v1::PAYLOAD_TYPE_ADVERTISE_KEYS: {
      auto m = protocol::UnpackPayload<v1::AdvertiseKeys>(env);
      s = !m.ok() ? m.status() : check(m->round_id(), m->index());
      if (s.ok()) s = server.HandleAdvertiseKeys(*m);
      break;
    }
    case v1::PAYLOAD_TYPE_SHARE_KEYS: {
      auto m = protocol::UnpackPayload<v1::ShareKeys>(env);
      s = !m.ok() ? m.status() : check(m->round_id(), m->from());
      if (s.ok()) s = server.HandleShareKeys(*m);
      break;
    }
    case v1::PAYLOAD_TYPE_MASKED_INPUT: {
      auto m = protocol::UnpackPayload<v1::MaskedInput>(env);
      s = !m.ok() ? m.status() : check(m->round_id(), m->index());
      if (!s.ok()) break;
      if (m->has_claim()) {
        // Resolve the claim check: fetch, check size and sha256, then open like inline.
        const v1::ClaimCheck& claim = m->claim();
        if (options.uploads == nullptr) {
          s = FailedPreconditionError("claim checks are not accepted (no upload source)");
          break;
        }
        auto bytes = options.uploads->Fetch(round->id, env.sender_id, claim);
        if (!bytes.ok()) {
          s = bytes.status();
          break;
        }
        const security::Sha256Digest digest = security::Sha256(*bytes);
        if (bytes->size() != claim.size() || claim.sha256().size() != digest.size() ||
            !ConstantTimeEqual(digest, AsBytes(claim.sha256()))) {
          s = DataLossError("uploaded bytes do not match the claim check (size or sha256)");
          break;
        }
        v1::SealedBox box;
        s = protocol::ParsePayload(AsStringView(*bytes), box, bytes->size());
        if (s.ok()) s = server.HandleSealedInput(idx, box);
        std::lock_guard<std::mutex> lock(mu);
        ++counters.uploads_fetched;
        counters.bytes_in += bytes->size();
      } else {
        s = server.HandleMaskedInput(*m);
      }
      break;
    }
    case v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_RESPONSE: {
      auto m = protocol::UnpackPayload<v1::ConsistencyCheckResponse>(env);
      s = !m.ok() ? m.status() : check(m->round_id(), m->index());
      if (s.ok()) s = server.HandleConsistencyCheckResponse(*m);
      break;
    }
    case v1::PAYLOAD_TYPE_UNMASK_RESPONSE: {
      auto m = protocol::UnpackPayload<v1::UnmaskResponse>(env);
      s = !m.ok() ? m.status() : check(m->round_id(), m->index());
      if (s.ok()) s = server.HandleUnmaskResponse(*m);
      break;
    }
    default: s = UnimplementedError("not a SecAgg uplink message"); break;
  }
  if (!s.ok()) return Reject(what, s);
  MarkAnswered(idx);
  MaybeCloseEarly();
}

// ---------------------------------------------------------------- ticking

void RoundDriver::Tick() {
  Impl& s = *impl_;
  s.FlushRecovery();
  if (!s.round) return;
  const int64_t now = s.clock.NowUnixMillis();
  if (s.round->state == RoundState::kSelecting && !s.round->need_announce && now >= s.round->deadline_ms) {
    s.CloseSelection();
  } else if (HoldsSecAggSecrets(s.round->state)) {
    if (now >= s.round->deadline_ms) {
      s.CloseStage();
    } else {
      s.Retransmit();
    }
  }
}

size_t RoundDriver::Poll(std::chrono::milliseconds timeout) {
  size_t n = impl_->attached ? impl_->options.transport->Poll(timeout) : 0;
  Tick();
  return n;
}

bool RoundDriver::idle() const { return impl_->round == nullptr; }

std::optional<RoundStatus> RoundDriver::status(std::string_view round_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->statuses.find(round_id);
  if (it == impl_->statuses.end()) return std::nullopt;
  return it->second;
}

RoundDriverStats RoundDriver::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counters;
}

}  // namespace flotilla::rounds
