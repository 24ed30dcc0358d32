// DeviceAgent: session, inbound verification, the task strand, presence/reported state
// and enrolment. The round handlers are in agent_round.cc.
#include "flotilla/device/agent.h"

#include <thread>

#include "agent_impl.h"
#include "flotilla/core/log.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/x509.h"

namespace flotilla::device {

namespace v1 = ::flotilla::v1;
using protocol::ConnectionState;
using protocol::Topic;

std::string_view ToString(AgentStage stage) {
  switch (stage) {
    case AgentStage::kCheckIn: return "check_in";
    case AgentStage::kResponse: return "response";
    case AgentStage::kAdvertiseKeys: return "advertise_keys";
    case AgentStage::kShareKeys: return "share_keys";
    case AgentStage::kMaskedInput: return "masked_input";
    case AgentStage::kConsistencyCheck: return "consistency_check";
    case AgentStage::kUnmask: return "unmask";
  }
  return "unknown";
}

std::string EligibilityShortfall(const v1::Eligibility& facts, const EligibilityPolicy& policy,
                                 const v1::Eligibility& announced) {
  if ((policy.require_charging || announced.charging()) && !facts.charging()) return "not charging";
  if ((policy.require_idle || announced.idle()) && !facts.idle()) return "not idle";
  if ((policy.require_unmetered || announced.unmetered_link()) && !facts.unmetered_link()) return "metered link";
  const uint64_t min_mem = std::max(policy.min_free_memory_bytes, announced.free_memory_bytes());
  if (facts.free_memory_bytes() < min_mem)
    return "free memory " + std::to_string(facts.free_memory_bytes()) + " < " + std::to_string(min_mem);
  const uint32_t min_battery = std::max(policy.min_battery_percent, announced.battery_percent());
  if (facts.battery_percent() < min_battery)
    return "battery " + std::to_string(facts.battery_percent()) + "% < " + std::to_string(min_battery) + "%";
  return {};
}

// ---------------------------------------------------------------- lifecycle

DeviceAgent::DeviceAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DeviceAgent::~DeviceAgent() {
  Stop();
  impl_->WaitForTask();
  if (impl_->transport) {
    impl_->transport->Disconnect().IgnoreError();
    impl_->transport.reset();
  }
}

Result<std::unique_ptr<DeviceAgent>> DeviceAgent::Open(DeviceAgentConfig config, DeviceAgentDeps deps) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("device id", config.device_id));
  FLT_RETURN_IF_ERROR(protocol::ValidateName("coordinator id", config.coordinator_id));
  for (const auto& g : config.groups) FLT_RETURN_IF_ERROR(protocol::ValidateName("group", g));
  if (!deps.transport_factory || !deps.signer || !deps.verifier || !deps.trainer)
    return InvalidArgumentError("DeviceAgent: transport_factory, signer, verifier and trainer are required");
  if (deps.signer->identity() != config.device_id)
    return InvalidArgumentError("DeviceAgent: signer identity '" + deps.signer->identity() + "' is not the device id '" +
                                config.device_id + "'");
  if (config.data_dir.empty()) return InvalidArgumentError("DeviceAgent: data_dir is required");
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return UnavailableError("DeviceAgent: cannot create " + config.data_dir.string() + ": " + ec.message());

  // Our own certificate rides with hardened key adverts so neighbours can check our key.
  // A device that relies on it (fleet_ca_pem) must hold one the CA vouches for, naming it;
  // otherwise the PEM is only for enrolment (the coordinator checks it) and one that does
  // not parse just is not sent.
  Bytes certificate_der;
  if (!config.fleet_ca_pem.empty()) {
    if (config.certificate_pem.empty())
      return InvalidArgumentError("DeviceAgent: fleet_ca_pem needs the device's certificate_pem");
    FLT_RETURN_IF_ERROR(security::VerifyCertificate(config.fleet_ca_pem, config.certificate_pem)
                            .WithContext("DeviceAgent: own certificate"));
    FLT_ASSIGN_OR_RETURN(std::string cn, security::CertificateCommonName(config.certificate_pem));
    if (cn != config.device_id)
      return InvalidArgumentError("DeviceAgent: certificate names '" + cn + "', not the device id '" +
                                  config.device_id + "'");
  }
  if (!config.certificate_pem.empty()) {
    if (auto der = security::CertificateDer(config.certificate_pem); der.ok()) certificate_der = std::move(*der);
  }
  auto impl = std::make_unique<Impl>(std::move(config), std::move(deps));
  impl->certificate_der = std::move(certificate_der);
  FLT_ASSIGN_OR_RETURN(impl->store, AgentStore::Open(impl->config.data_dir / "agent.db"));
  FLT_RETURN_IF_ERROR(impl->LoadState());
  return std::unique_ptr<DeviceAgent>(new DeviceAgent(std::move(impl)));
}

DeviceAgent::Impl::Impl(DeviceAgentConfig c, DeviceAgentDeps d)
    : config(std::move(c)),
      deps(std::move(d)),
      clock(deps.clock != nullptr ? *deps.clock : RealClock()),
      random(deps.random != nullptr ? *deps.random : OsRandom()),
      crypto(deps.crypto != nullptr ? *deps.crypto : aggregation::DeviceCryptoSuite()) {
  open_options.recipients.push_back(config.device_id);
  for (const auto& g : config.groups) open_options.recipients.push_back(protocol::GroupRecipient(g));
  Bytes sid(16);
  random.Fill(sid);
  session_id = ToHex(sid);
}

Status DeviceAgent::Impl::LoadState() {
  FLT_ASSIGN_OR_RETURN(auto adapter_row, store->LoadAdapter());
  FLT_ASSIGN_OR_RETURN(int64_t abandoned,
                       store->AbandonUnfinished("agent restarted during the round", clock.NowUnixMillis()));
  if (abandoned > 0) {
    FLT_LOG(kInfo, "agent") << config.device_id << ": " << abandoned << " unfinished round(s) abandoned";
  }
  FLT_ASSIGN_OR_RETURN(auto enrolled, store->GetValue("enrolled"));
  FLT_ASSIGN_OR_RETURN(uint64_t completed, store->CountRounds("completed"));
  FLT_ASSIGN_OR_RETURN(uint64_t aborted, store->CountRounds("aborted"));
  std::lock_guard<std::mutex> lock(status_mu);
  if (adapter_row) {
    adapter = std::move(*adapter_row);
    status.adapter_version = adapter.version;
    status.adapter_sha256 = adapter.sha256;
  }
  status.enrolled = enrolled.has_value() && *enrolled == "1";
  status.rounds_completed = completed;
  status.rounds_aborted = aborted;
  return Status::Ok();
}

Status DeviceAgent::StartConnect() {
  Impl& s = *impl_;
  if (!s.transport) {
    v1::Presence offline;
    offline.set_state(v1::PRESENCE_STATE_OFFLINE);
    offline.set_session_id(s.session_id);
    offline.set_timestamp_ms(s.clock.NowUnixMillis());
    FLT_ASSIGN_OR_RETURN(Bytes wire, s.SealTo(offline, s.config.coordinator_id));
    protocol::Message will;
    FLT_ASSIGN_OR_RETURN(will.topic, protocol::FormatTopic(Topic::Presence(s.config.device_id)));
    will.payload = std::move(wire);
    will.qos = 1;
    will.retained = true;
    FLT_ASSIGN_OR_RETURN(s.transport, s.deps.transport_factory(will));
    if (!s.transport) return InternalError("DeviceAgent: transport factory returned null");
    s.transport->SetMessageHandler([&s](const protocol::Message& m) { s.OnMessage(m); });
    s.transport->SetConnectionStateHandler(
        [&s](ConnectionState state, const Status& cause) { s.OnConnectionState(state, cause); });
    FLT_ASSIGN_OR_RETURN(auto filters, protocol::DeviceSubscriptions(s.config.device_id, s.config.groups));
    for (const auto& f : filters) FLT_RETURN_IF_ERROR(s.transport->Subscribe(f.filter, f.qos));
  }
  return s.transport->StartConnect();
}

Status DeviceAgent::Connect(std::chrono::milliseconds timeout) {
  FLT_RETURN_IF_ERROR(StartConnect());
  FLT_RETURN_IF_ERROR(impl_->transport->WaitConnected(timeout));
  Poll(std::chrono::milliseconds(0));  // run the connected handler (presence, reported state)
  return Status::Ok();
}

Status DeviceAgent::Disconnect() {
  if (!impl_->transport) return Status::Ok();
  return impl_->transport->Disconnect();
}

size_t DeviceAgent::Poll(std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  size_t n = s.RunCompletions();
  if (s.transport) {
    // Do not sleep in the transport while a finished task waits to be applied.
    n += s.transport->Poll(n > 0 ? std::chrono::milliseconds(0) : timeout);
  }
  n += s.RunCompletions();
  s.Pump();
  s.CheckDeadlines();
  s.RetryEnrolment();
  return n;
}

Status DeviceAgent::Start() {
  Impl& s = *impl_;
  if (s.thread.joinable()) return FailedPreconditionError("DeviceAgent: already started");
  FLT_RETURN_IF_ERROR(StartConnect());
  s.stop.store(false);
  s.thread = std::thread([this] {
    while (!impl_->stop.load()) Poll(std::chrono::milliseconds(20));
  });
  return Status::Ok();
}

void DeviceAgent::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->stop.store(true);
  impl_->thread.join();
}

AgentStatus DeviceAgent::status() const {
  std::lock_guard<std::mutex> lock(impl_->status_mu);
  AgentStatus st = impl_->status;
  st.connection = impl_->transport ? impl_->transport->state() : ConnectionState::kDisconnected;
  return st;
}

std::vector<float> DeviceAgent::adapter() const {
  std::lock_guard<std::mutex> lock(impl_->status_mu);
  return impl_->adapter.values;
}

bool DeviceAgent::idle() const { return !impl_->task_running && impl_->pending.empty(); }

const std::string& DeviceAgent::device_id() const { return impl_->config.device_id; }
protocol::Transport* DeviceAgent::transport() { return impl_->transport.get(); }

Status DeviceAgent::PublishReportedState() { return impl_->PublishReported(); }

// ---------------------------------------------------------------- connection and presence

void DeviceAgent::Impl::OnConnectionState(ConnectionState state, const Status& cause) {
  if (state != ConnectionState::kConnected) {
    if (state == ConnectionState::kReconnecting || state == ConnectionState::kDisconnected) {
      if (ever_connected) {
        FLT_LOG(kDebug, "agent") << config.device_id << ": connection lost: " << cause.ToString();
      }
    }
    return;
  }
  const bool reconnect = ever_connected;
  ever_connected = true;
  if (reconnect) {
    FLT_LOG(kDebug, "agent") << config.device_id << ": reconnected";
  }
  // The broker may have lost retained state (restart without persistence): always
  // re-announce presence and reported state.
  v1::Presence online;
  online.set_state(v1::PRESENCE_STATE_ONLINE);
  online.set_session_id(session_id);
  online.set_timestamp_ms(clock.NowUnixMillis());
  Status s = Send(online);
  if (!s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": presence not published: " << s.ToString();
  }
  s = PublishReported();
  if (!s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": reported state not published: " << s.ToString();
  }
  if (!status_snapshot_enrolled() && !config.certificate_pem.empty()) {
    enrolment_backoff_ms = 0;
    EnrolNow();
  }
  // Whatever this device last said in the running round may have been lost with the
  // connection. Receivers drop exact duplicates (same message id), so re-send it.
  if (reconnect) ResendLast();
}

bool DeviceAgent::Impl::status_snapshot_enrolled() {
  std::lock_guard<std::mutex> lock(status_mu);
  return status.enrolled;
}

v1::Eligibility DeviceAgent::Impl::CurrentEligibility() const {
  if (deps.eligibility) return deps.eligibility();
  v1::Eligibility e;
  e.set_charging(true);
  e.set_idle(true);
  e.set_unmetered_link(true);
  e.set_battery_percent(100);
  e.set_free_memory_bytes(config.capabilities.ram_bytes());
  return e;
}

Status DeviceAgent::Impl::PublishReported() {
  if (!transport) return FailedPreconditionError("DeviceAgent: not connected yet");
  v1::ReportedState r;
  *r.mutable_base_model() = config.base_model;
  {
    std::lock_guard<std::mutex> lock(status_mu);
    r.set_adapter_version(adapter.version);
  }
  r.set_firmware_version(config.firmware_version);
  *r.mutable_capabilities() = config.capabilities;
  *r.mutable_eligibility() = CurrentEligibility();
  r.set_timestamp_ms(clock.NowUnixMillis());
  for (const auto& g : config.groups) r.add_groups(g);
  return Send(r);
}

void DeviceAgent::Impl::EnrolNow() {
  Status s = SendEnrolment();
  if (!s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": enrolment not sent: " << s.ToString();
  }
  const int64_t first = config.enrolment_retry.count(), cap = config.enrolment_retry_max.count();
  enrolment_backoff_ms = enrolment_backoff_ms == 0 ? first : std::min(enrolment_backoff_ms * 2, cap);
  // Jitter over the upper half, so a fleet that booted together does not retry together.
  const int64_t half = std::max<int64_t>(enrolment_backoff_ms / 2, 1);
  next_enrolment_ms =
      clock.NowUnixMillis() + half + static_cast<int64_t>(random.Uniform(static_cast<uint64_t>(half) + 1));
}

void DeviceAgent::Impl::RetryEnrolment() {
  if (next_enrolment_ms == 0 || clock.NowUnixMillis() < next_enrolment_ms) return;
  if (status_snapshot_enrolled()) {
    next_enrolment_ms = 0;
    return;
  }
  if (!transport || transport->state() != protocol::ConnectionState::kConnected) return;  // reconnect re-sends
  FLT_LOG(kDebug, "agent") << config.device_id << ": no enrolment response yet, re-sending";
  EnrolNow();
}

Status DeviceAgent::Impl::SendEnrolment() {
  v1::EnrolmentRequest req;
  req.set_device_id(config.device_id);
  req.set_certificate_pem(config.certificate_pem);
  req.set_identity_public_key(config.identity_public_key_der.data(), config.identity_public_key_der.size());
  req.set_enrolment_token(config.enrolment_token);
  req.set_firmware_version(config.firmware_version);
  *req.mutable_hardware()->mutable_capabilities() = config.capabilities;
  return Send(req);
}

void DeviceAgent::Impl::HandleEnrolmentResponse(const protocol::OpenedEnvelope& env) {
  auto resp = protocol::UnpackPayload<v1::EnrolmentResponse>(env);
  if (!resp.ok() || resp->device_id() != config.device_id) {
    Reject("enrolment response", resp.ok() ? InvalidArgumentError("for another device") : resp.status());
    return;
  }
  if (!resp->accepted()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": enrolment refused: " << resp->reason();
    return;
  }
  Status s = store->SetValue("enrolled", "1");
  if (!s.ok()) {
    FLT_LOG(kError, "agent") << config.device_id << ": cannot persist enrolment: " << s.ToString();
  }
  for (const auto& g : resp->groups()) {
    if (!protocol::IsValidName(g) ||
        std::find(config.groups.begin(), config.groups.end(), g) != config.groups.end())
      continue;
    config.groups.push_back(g);
    open_options.recipients.push_back(protocol::GroupRecipient(g));
    auto topic = protocol::FormatTopic(Topic::GroupRound(g));
    if (topic.ok()) transport->Subscribe(*topic, 1).IgnoreError();
  }
  std::lock_guard<std::mutex> lock(status_mu);
  status.enrolled = true;
}

// ---------------------------------------------------------------- inbound

void DeviceAgent::Impl::Reject(std::string_view what, const Status& why) {
  FLT_LOG(kWarn, "agent") << config.device_id << ": dropped " << what << ": " << why.ToString();
  std::lock_guard<std::mutex> lock(status_mu);
  ++status.messages_rejected;
}

void DeviceAgent::Impl::OnMessage(const protocol::Message& m) {
  auto topic = protocol::ParseTopic(m.topic);
  if (!topic.ok()) return Reject("message on a bad topic", topic.status());
  auto opened = protocol::Open(m.payload, *deps.verifier, clock, open_options);
  if (!opened.ok()) return Reject("envelope on " + m.topic, opened.status());
  if (Status b = protocol::CheckTopicBinding(*topic, *opened); !b.ok()) return Reject("envelope on " + m.topic, b);
  if (opened->sender_id != config.coordinator_id)
    return Reject("envelope on " + m.topic, PermissionDeniedError("sender '" + opened->sender_id + "' is not the coordinator"));
  if (Status r = replay.Check(*opened, clock); !r.ok()) {
    {
      std::lock_guard<std::mutex> lock(status_mu);
      ++status.messages_duplicate;
    }
    // The coordinator repeats a stage message (same bytes) to devices it has not heard
    // from: our answer was lost with a connection. Answer again, at most once a second.
    const int64_t now = clock.NowUnixMillis();
    if (r.code() == StatusCode::kAlreadyExists && round && !task_running && now - last_resend_ms >= 1000) {
      last_resend_ms = now;
      ResendLast();
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(status_mu);
    ++status.messages_accepted;
  }
  pending.push_back(std::move(*opened));
}

void DeviceAgent::Impl::Pump() {
  while (!task_running && !pending.empty()) {
    protocol::OpenedEnvelope env = std::move(pending.front());
    pending.pop_front();
    Dispatch(env);
  }
}

void DeviceAgent::Impl::Dispatch(const protocol::OpenedEnvelope& env) {
  switch (env.payload_type) {
    case v1::PAYLOAD_TYPE_ENROLMENT_RESPONSE: return HandleEnrolmentResponse(env);
    case v1::PAYLOAD_TYPE_ROUND_ANNOUNCEMENT: return HandleAnnouncement(env);
    case v1::PAYLOAD_TYPE_ROUND_INVITATION: return HandleInvitation(env);
    case v1::PAYLOAD_TYPE_NEIGHBOUR_KEYS:
    case v1::PAYLOAD_TYPE_FORWARDED_SHARES:
    case v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST:
    case v1::PAYLOAD_TYPE_UNMASK_REQUEST: return HandleSecAggMessage(env);
    case v1::PAYLOAD_TYPE_AGGREGATE_RESULT: return HandleAggregateResult(env);
    case v1::PAYLOAD_TYPE_ROUND_ABORT: return HandleRoundAbort(env);
    default:
      // Desired state and OTA hints belong to the OTA client, not to the round agent.
      FLT_LOG(kDebug, "agent") << config.device_id << ": ignoring " << protocol::PayloadTypeName(env.payload_type);
      return;
  }
}

// ---------------------------------------------------------------- tasks

void DeviceAgent::Impl::RunTask(std::function<std::function<void()>()> work) {
  FLT_CHECK(!task_running);
  task_running = true;
  if (deps.runner == nullptr) {
    std::function<void()> then = work();
    task_running = false;
    if (then) then();
    return;
  }
  deps.runner->Post([this, work = std::move(work)] {
    std::function<void()> then = work();
    std::lock_guard<std::mutex> lock(done_mu);
    done.push_back(std::move(then));
    task_finished = true;
    done_cv.notify_all();
  });
}

size_t DeviceAgent::Impl::RunCompletions() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(done_mu);
    if (!task_finished) return 0;
    ready.swap(done);
    task_finished = false;
  }
  task_running = false;
  for (auto& f : ready) {
    if (f) f();
  }
  return ready.size();
}

void DeviceAgent::Impl::WaitForTask() {
  if (!task_running) return;
  std::unique_lock<std::mutex> lock(done_mu);
  done_cv.wait(lock, [&] { return task_finished; });
  lock.unlock();
  RunCompletions();
}

}  // namespace flotilla::device
