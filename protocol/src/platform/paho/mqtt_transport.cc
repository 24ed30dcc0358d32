// MqttTransport on Paho MQTT C++ 1.2.0 / Paho C 1.3.12 (MQTTAsync).
//
// Rules this file keeps (reference/mqtt.md §1–2):
//  - Paho runs every callback of every client on ONE shared receive thread, so callbacks
//    here only copy data and TryPush; they never wait on a token.
//  - No persistence object is ever passed (nullptr = none): no file store.
//  - create_options with MQTTVERSION_5 AND connect options with mqtt_version(5), with
//    clean_start and SESSION_EXPIRY_INTERVAL always set explicitly.
#include "flotilla/protocol/mqtt_transport.h"

#include <sys/resource.h>

#include <MQTTAsync.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <mqtt/async_client.h>

#include "flotilla/core/log.h"

namespace flotilla::protocol {
namespace {

constexpr std::string_view kLog = "mqtt";

// Every Paho exception becomes a Status whose code follows the MQTT v5 reason code when
// the broker gave one, else the Paho C return code; the text keeps both.
Status FromPaho(const mqtt::exception& e, std::string_view what) {
  std::string text = std::string(what) + ": " + e.what();
  const int reason = e.get_reason_code();
  if (reason >= 0x80) {
    switch (reason) {
      case mqtt::ReasonCode::NOT_AUTHORIZED:
        return PermissionDeniedError(text);
      case mqtt::ReasonCode::BAD_USER_NAME_OR_PASSWORD:
      case mqtt::ReasonCode::BAD_AUTHENTICATION_METHOD:
        return UnauthenticatedError(text);
      case mqtt::ReasonCode::PACKET_TOO_LARGE:
      case mqtt::ReasonCode::QUOTA_EXCEEDED:
      case mqtt::ReasonCode::RECEIVE_MAXIMUM_EXCEEDED:
        return ResourceExhaustedError(text);
      case mqtt::ReasonCode::TOPIC_FILTER_INVALID:
      case mqtt::ReasonCode::TOPIC_NAME_INVALID:
      case mqtt::ReasonCode::PAYLOAD_FORMAT_INVALID:
      case mqtt::ReasonCode::RETAIN_NOT_SUPPORTED:
      case mqtt::ReasonCode::QOS_NOT_SUPPORTED:
        return InvalidArgumentError(text);
      case mqtt::ReasonCode::SERVER_UNAVAILABLE:
      case mqtt::ReasonCode::SERVER_BUSY:
      case mqtt::ReasonCode::SERVER_SHUTTING_DOWN:
        return UnavailableError(text);
      default:
        // e.g. 0x83 "implementation specific error": Mosquitto's answer to a payload over
        // message_size_limit.
        return AbortedError("broker refused: " + text);
    }
  }
  switch (e.get_return_code()) {
    case MQTTASYNC_MAX_BUFFERED_MESSAGES:
    case MQTTASYNC_MAX_MESSAGES_INFLIGHT:
    case MQTTASYNC_NO_MORE_MSGIDS:
      return ResourceExhaustedError(text);
    case MQTTASYNC_BAD_UTF8_STRING:
    case MQTTASYNC_NULL_PARAMETER:
    case MQTTASYNC_TOPICNAME_TRUNCATED:
    case MQTTASYNC_BAD_STRUCTURE:
    case MQTTASYNC_BAD_QOS:
    case MQTTASYNC_BAD_PROTOCOL:
    case MQTTASYNC_BAD_MQTT_OPTION:
    case MQTTASYNC_WRONG_MQTT_VERSION:
    case MQTTASYNC_0_LEN_WILL_TOPIC:
      return InvalidArgumentError(text);
    case MQTTASYNC_SSL_NOT_SUPPORTED:
      return FailedPreconditionError(text);
    case MQTTASYNC_OPERATION_INCOMPLETE:
    case MQTTASYNC_COMMAND_IGNORED:
      return CancelledError(text);
    default:
      return UnavailableError(text);
  }
}

Status ValidateOptions(const MqttTransportOptions& o) {
  const bool tcp = o.server_uri.rfind("tcp://", 0) == 0 || o.server_uri.rfind("mqtt://", 0) == 0;
  const bool ssl = o.server_uri.rfind("ssl://", 0) == 0 || o.server_uri.rfind("mqtts://", 0) == 0;
  if (!tcp && !ssl) return InvalidArgumentError("server_uri must start with tcp:// or ssl://, got '" + o.server_uri + "'");
  if (ssl && !o.tls) return InvalidArgumentError("ssl:// URI needs tls options (ca_file at least)");
  if (tcp && o.tls) return InvalidArgumentError("tls options given for a plain tcp:// URI " + o.server_uri);
  if (o.tls && o.tls->cert_file.empty() != o.tls->key_file.empty())
    return InvalidArgumentError("tls cert_file and key_file must be given together");
  if (o.client_id.empty() || o.client_id.size() > 65535)
    return InvalidArgumentError("client_id must be 1..65535 bytes");
  if (o.keepalive.count() < 0 || o.keepalive.count() > 65535)
    return InvalidArgumentError("keepalive must be 0..65535 s");
  if (o.max_payload_size == 0) return InvalidArgumentError("max_payload_size must be > 0");
  if (o.queue_capacity == 0) return InvalidArgumentError("queue_capacity must be > 0");
  if (o.max_buffered_messages <= 0) return InvalidArgumentError("max_buffered_messages must be > 0");
  if (o.reconnect_min_backoff_low.count() < 1 || o.reconnect_min_backoff_high < o.reconnect_min_backoff_low ||
      o.reconnect_max_backoff < o.reconnect_min_backoff_high)
    return InvalidArgumentError("reconnect back-off needs 1 s <= min_low <= min_high <= max");
  if (o.will) {
    FLT_RETURN_IF_ERROR(ValidateTopicName(o.will->topic).WithContext("will topic"));
    if (o.will->qos != 0 && o.will->qos != 1) return InvalidArgumentError("will qos must be 0 or 1");
    if (o.will->payload.size() > o.max_payload_size) return ResourceExhaustedError("will payload over max_payload_size");
  }
  return Status::Ok();
}

}  // namespace

struct MqttTransport::Impl {
  // Paho action listeners: run on Paho's thread, so they only record and enqueue.
  struct ConnectListener final : mqtt::iaction_listener {
    explicit ConnectListener(Impl* i) : impl(i) {}
    // Paho may run this more than once per CONNACK (token and reconnect paths), so it only
    // records the session flag; the connected handler, called once per connection,
    // acts on it.
    void on_success(const mqtt::token& tok) override {
      try {
        impl->session_present.store(tok.get_connect_response().is_session_present());  // complete: no wait
      } catch (const mqtt::exception&) {
        impl->session_present.store(false);
      }
    }
    void on_failure(const mqtt::token& tok) override { impl->OnConnectFailed(tok); }
    Impl* impl;
  };
  // Completion of a publish or a subscription restore nobody waits for: failures are
  // counted (publishes) and logged, since no caller is there to receive a Status.
  struct BackgroundListener final : mqtt::iaction_listener {
    BackgroundListener(Impl* i, bool publishes) : impl(i), is_publish(publishes) {}
    void on_success(const mqtt::token&) override {
      if (is_publish) impl->PublishDone();
    }
    void on_failure(const mqtt::token& tok) override {
      if (is_publish) {
        impl->PublishDone();
        impl->counters.publish_failures.fetch_add(1);
      }
      FLT_LOG(kDebug, kLog) << impl->options.client_id << (is_publish ? ": publish" : ": subscription restore")
                            << " failed, rc " << tok.get_return_code() << " reason " << tok.get_reason_code();
    }
    Impl* impl;
    bool is_publish;
  };

  explicit Impl(MqttTransportOptions o) : options(std::move(o)), inbox(options.queue_capacity, options.queue_memory_budget, options.queue_spill_dir) {}

  void OnConnected();
  void OnConnectFailed(const mqtt::token& tok);
  void OnConnectionLost(const std::string& cause);
  void OnMessage(const mqtt::const_message_ptr& msg);
  void SetState(ConnectionState s, Status cause);
  void PrepareConnectOptions();
  Status WaitTokens(std::vector<mqtt::token_ptr> tokens, std::chrono::steady_clock::time_point deadline,
                    std::string_view what);

  MqttTransportOptions options;
  std::chrono::seconds backoff_min{1};
  std::chrono::seconds backoff_max{60};
  mqtt::connect_options connect_opts;  // lives as long as the client: see PrepareConnectOptions
  std::unique_ptr<mqtt::async_client> client;
  TransportInbox inbox;
  ConnectListener connect_listener{this};
  BackgroundListener publish_listener{this, true};
  BackgroundListener resubscribe_listener{this, false};

  std::atomic<ConnectionState> state{ConnectionState::kDisconnected};
  std::atomic<bool> connected_once{false};  // a later CONNACK is an automatic reconnect
  std::atomic<bool> session_present{false};  // from the latest CONNACK
  TransportCounters counters;
  // Publishes whose listener has not run yet (max_publishes_in_flight).
  std::mutex flight_mu;
  std::condition_variable flight_cv;
  size_t in_flight = 0;  // GUARDED_BY(flight_mu)

  void PublishDone() {
    {
      std::lock_guard<std::mutex> lock(flight_mu);
      --in_flight;
    }
    flight_cv.notify_one();
  }
  // Takes a publish slot, waiting while the window is full and the client connected
  // (publishes queue for the reconnect otherwise, bounded by max_buffered_messages). After
  // operation_timeout it goes ahead anyway: the window bounds memory, it never loses a
  // message.
  void AcquirePublishSlot() {
    std::unique_lock<std::mutex> lock(flight_mu);
    const size_t max = options.max_publishes_in_flight;
    const auto deadline = std::chrono::steady_clock::now() + options.operation_timeout;
    while (max > 0 && in_flight >= max && state.load() == ConnectionState::kConnected) {
      if (std::chrono::steady_clock::now() >= deadline) {
        FLT_LOG(kWarn, kLog) << options.client_id << ": " << in_flight << " publishes unacknowledged for "
                             << options.operation_timeout.count() << " ms; publishing past the window";
        break;
      }
      flight_cv.wait_for(lock, std::chrono::milliseconds(50));  // a lost connection never signals
    }
    ++in_flight;
  }

  std::mutex mu;
  std::condition_variable state_cv;                         // signalled on state / failure changes
  std::map<std::string, int, std::less<>> subscriptions;    // GUARDED_BY(mu)
  std::vector<mqtt::token_ptr> restore_tokens;              // GUARDED_BY(mu) resubscribes in flight
  std::optional<Status> connect_failure;                    // GUARDED_BY(mu)

  // Owner thread only.
  mqtt::token_ptr connect_token;
  MessageHandler on_message;
  ConnectionStateHandler on_state;
};

void MqttTransport::Impl::SetState(ConnectionState s, Status cause) {
  {
    std::lock_guard<std::mutex> lock(mu);
    state.store(s);
  }
  state_cv.notify_all();
  inbox.PushState(s, std::move(cause));
}

// Paho thread, once per established connection: the first connect ("connect onSuccess
// called") and every automatic reconnect, always after the connect token's success.
void MqttTransport::Impl::OnConnected() {
  const bool is_reconnect = connected_once.exchange(true);
  {
    std::lock_guard<std::mutex> lock(mu);
    std::erase_if(restore_tokens, [](const mqtt::token_ptr& t) { return t->is_complete(); });
    // Without a resumed session the broker forgot our subscriptions (clean start, expiry
    // 0, or a broker restart): send them again. Asynchronous: never wait on this thread.
    if (!session_present.load()) {
      for (const auto& [filter, qos] : subscriptions) {
        try {
          restore_tokens.push_back(client->subscribe(filter, qos, nullptr, resubscribe_listener));
          if (is_reconnect) counters.resubscribes.fetch_add(1);
        } catch (const mqtt::exception& e) {
          FLT_LOG(kWarn, kLog) << options.client_id << ": " << FromPaho(e, "restoring subscription " + filter).ToString();
        }
      }
    }
    state.store(ConnectionState::kConnected);
    connect_failure.reset();
  }
  state_cv.notify_all();
  if (is_reconnect) counters.reconnects.fetch_add(1);
  inbox.PushState(ConnectionState::kConnected, Status::Ok());
}

void MqttTransport::Impl::OnConnectFailed(const mqtt::token& tok) {
  // Failed automatic-reconnect attempts also land here; Paho keeps retrying them.
  if (connected_once.load()) return;
  std::string text = "connect to " + options.server_uri + " failed: " +
                     mqtt::exception::printable_error(tok.get_return_code(), tok.get_reason_code());
  Status failure;
  {
    std::lock_guard<std::mutex> lock(mu);
    failure = FromPaho(mqtt::exception(tok.get_return_code(), mqtt::ReasonCode(tok.get_reason_code()), text),
                       options.client_id);
    connect_failure = failure;
    state.store(ConnectionState::kDisconnected);
  }
  state_cv.notify_all();
  inbox.PushState(ConnectionState::kDisconnected, std::move(failure));
}

void MqttTransport::Impl::OnConnectionLost(const std::string& cause) {
  SetState(options.automatic_reconnect ? ConnectionState::kReconnecting : ConnectionState::kDisconnected,
           UnavailableError("connection to " + options.server_uri + " lost" + (cause.empty() ? "" : ": " + cause)));
}

void MqttTransport::Impl::OnMessage(const mqtt::const_message_ptr& msg) {
  const mqtt::binary_ref& payload = msg->get_payload_ref();
  if (payload.size() > options.max_payload_size) {
    // Untrusted input over the policy limit is never delivered (a broker without
    // message_size_limit could otherwise feed us anything up to 256 MB).
    counters.dropped_oversize.fetch_add(1);
    return;
  }
  Message m;
  m.topic = msg->get_topic();
  m.payload.assign(payload.data(), payload.data() + payload.size());
  m.qos = msg->get_qos();
  m.retained = msg->is_retained();
  const mqtt::properties& props = msg->get_properties();
  try {
    if (props.contains(mqtt::property::RESPONSE_TOPIC))
      m.response_topic = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
    if (props.contains(mqtt::property::CORRELATION_DATA)) {
      const std::string cd = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
      m.correlation_data.assign(cd.begin(), cd.end());
    }
  } catch (const std::exception&) {
    // A malformed property is dropped; the payload itself is still delivered.
  }
  if (inbox.PushMessage(std::move(m))) counters.received.fetch_add(1);
}

// Fills the long-lived `connect_opts` member with setters. Paho C++ 1.2.0's copies of
// connect_options can keep raw pointers into the object they were copied from (connect
// properties), so a builder temporary is unsafe (seen as a SEGV in MQTTProperties_copy);
// copies of a member that outlives the connect call are not.
void MqttTransport::Impl::PrepareConnectOptions() {
  mqtt::connect_options& c = connect_opts;
  c.set_mqtt_version(MQTTVERSION_5);
  c.set_clean_start(options.clean_start);  // explicit: set_mqtt_version(5) leaves it false
  c.set_keep_alive_interval(options.keepalive);
  c.set_connect_timeout(std::chrono::ceil<std::chrono::seconds>(options.connect_timeout));
  c.set_properties(mqtt::properties{mqtt::property(mqtt::property::SESSION_EXPIRY_INTERVAL,
                                                   static_cast<int32_t>(options.session_expiry_seconds))});
  if (options.automatic_reconnect) c.set_automatic_reconnect(backoff_min, backoff_max);
  else c.set_automatic_reconnect(false);
  if (options.will) {
    mqtt::properties will_props;
    if (options.will->delay_seconds > 0)
      will_props.add(mqtt::property(mqtt::property::WILL_DELAY_INTERVAL, static_cast<int32_t>(options.will->delay_seconds)));
    c.set_will(mqtt::will_options(options.will->topic, options.will->payload.data(), options.will->payload.size(),
                                  options.will->qos, options.will->retain, will_props));
  }
  if (options.tls) {
    mqtt::ssl_options ssl;
    ssl.set_trust_store(options.tls->ca_file);
    ssl.set_enable_server_cert_auth(options.tls->verify_server);
    ssl.set_verify(options.tls->verify_server);
    // No error_handler: in Paho C++ 1.2.0 its context pointer dangles once the options
    // are copied into the connect options (segfault on the first TLS error).
    if (!options.tls->cert_file.empty()) {
      ssl.set_key_store(options.tls->cert_file);
      ssl.set_private_key(options.tls->key_file);
    }
    c.set_ssl(std::move(ssl));
  }
}

Status MqttTransport::Impl::WaitTokens(std::vector<mqtt::token_ptr> tokens,
                                       std::chrono::steady_clock::time_point deadline, std::string_view what) {
  for (const mqtt::token_ptr& t : tokens) {
    try {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (!t->wait_for(std::max(left, std::chrono::milliseconds(0))))
        return DeadlineExceededError(std::string(what) + ": no answer from " + options.server_uri + " in time");
    } catch (const mqtt::exception& e) {
      return FromPaho(e, what);
    }
  }
  return Status::Ok();
}

// ---- MqttTransport --------------------------------------------------------------------

MqttTransport::MqttTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<MqttTransport>> MqttTransport::Create(MqttTransportOptions options) {
  FLT_RETURN_IF_ERROR(ValidateOptions(options));
  auto impl = std::make_unique<Impl>(std::move(options));
  MqttTransportOptions& o = impl->options;
  Random& rng = o.random ? *o.random : OsRandom();
  const auto span = static_cast<uint64_t>((o.reconnect_min_backoff_high - o.reconnect_min_backoff_low).count()) + 1;
  impl->backoff_min = o.reconnect_min_backoff_low + std::chrono::seconds(rng.Uniform(span));
  // A little jitter on the cap too, so clients at the cap do not retry in lock step.
  impl->backoff_max = o.reconnect_max_backoff +
                      std::chrono::seconds(rng.Uniform(static_cast<uint64_t>(o.reconnect_max_backoff.count() / 4) + 1));
  try {
    const auto create = mqtt::create_options_builder()
                            .mqtt_version(MQTTVERSION_5)
                            .max_buffered_messages(o.max_buffered_messages)
                            .send_while_disconnected(true, false)  // buffer while reconnecting only
                            .delete_oldest_messages(false)
                            .finalize();
    // The persistence argument is nullptr: no file store, ever (reference/mqtt.md §2).
    impl->client = std::make_unique<mqtt::async_client>(o.server_uri, o.client_id, create, nullptr);
    impl->PrepareConnectOptions();
    Impl* raw = impl.get();
    impl->client->set_message_callback([raw](mqtt::const_message_ptr m) { raw->OnMessage(m); });
    impl->client->set_connection_lost_handler([raw](const std::string& cause) { raw->OnConnectionLost(cause); });
    impl->client->set_connected_handler([raw](const std::string&) { raw->OnConnected(); });
  } catch (const mqtt::exception& e) {
    return FromPaho(e, "creating MQTT client " + o.client_id);
  }
  return std::unique_ptr<MqttTransport>(new MqttTransport(std::move(impl)));
}

MqttTransport::~MqttTransport() {
  if (!impl_) return;
  Status s = Disconnect();
  if (!s.ok() && s.code() == StatusCode::kDeadlineExceeded) {
    // Destroying a Paho client with actions pending can hang or crash (paho.mqtt.cpp
    // #204); leaking one client in this pathological case is the lesser evil.
    FLT_LOG(kError, kLog) << impl_->options.client_id << ": disconnect did not complete (" << s.ToString()
                          << "); leaking the Paho client";
    (void)impl_->client.release();
    (void)impl_.release();
    return;
  }
  // The Paho client goes first, while everything its callbacks touch is still alive.
  impl_->client.reset();
  impl_->inbox.Close();
}

void MqttTransport::SetMessageHandler(MessageHandler handler) { impl_->on_message = std::move(handler); }
void MqttTransport::SetConnectionStateHandler(ConnectionStateHandler handler) { impl_->on_state = std::move(handler); }

Status MqttTransport::StartConnect() {
  Impl& d = *impl_;
  if (d.state.load() != ConnectionState::kDisconnected) return Status::Ok();  // already on its way
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.connect_failure.reset();
  }
  d.connected_once.store(false);
  d.SetState(ConnectionState::kConnecting, Status::Ok());
  try {
    d.connect_token = d.client->connect(d.connect_opts, nullptr, d.connect_listener);
  } catch (const mqtt::exception& e) {
    Status s = FromPaho(e, "connect to " + d.options.server_uri);
    d.SetState(ConnectionState::kDisconnected, s);
    return s;
  }
  return Status::Ok();
}

Status MqttTransport::WaitConnected(std::chrono::milliseconds timeout) {
  Impl& d = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<mqtt::token_ptr> restore;
  {
    std::unique_lock<std::mutex> lock(d.mu);
    const bool done = d.state_cv.wait_until(lock, deadline, [&] {
      return d.state.load() == ConnectionState::kConnected || d.connect_failure.has_value() ||
             d.state.load() == ConnectionState::kDisconnected;
    });
    if (d.connect_failure) return *d.connect_failure;
    if (!done) {
      return DeadlineExceededError(d.options.client_id + ": not connected to " + d.options.server_uri + " within " +
                                   std::to_string(timeout.count()) + " ms (state " +
                                   std::string(ToString(d.state.load())) + ")");
    }
    if (d.state.load() != ConnectionState::kConnected)
      return FailedPreconditionError(d.options.client_id + ": not connecting (call StartConnect first)");
    restore = d.restore_tokens;
  }
  return d.WaitTokens(std::move(restore), deadline, "restoring subscriptions");
}

Status MqttTransport::Connect() {
  FLT_RETURN_IF_ERROR(StartConnect());
  return WaitConnected(impl_->options.connect_timeout + std::chrono::seconds(2));
}

Status MqttTransport::Disconnect() {
  Impl& d = *impl_;
  if (!d.connect_token) return Status::Ok();  // never connected, or already disconnected
  const auto deadline = std::chrono::steady_clock::now() + d.options.operation_timeout;
  // A DISCONNECT racing a CONNECT in progress is undefined in Paho: let the connect end.
  if (d.state.load() == ConnectionState::kConnecting) {
    try {
      d.connect_token->wait_for(d.options.connect_timeout + std::chrono::seconds(2));
    } catch (const mqtt::exception&) {
    }
  }
  Status result;
  try {
    // 0 ms grace: queued QoS 1 publishes are not waited for (the caller asked to stop).
    mqtt::token_ptr tok = d.client->disconnect(mqtt::disconnect_options(0));
    if (!tok->wait_for(d.options.operation_timeout))
      result = DeadlineExceededError(d.options.client_id + ": DISCONNECT did not complete");
  } catch (const mqtt::exception& e) {
    // Not connected (connect failed, or reconnecting): nothing to close, and Paho has
    // stopped its automatic reconnect. Anything else is reported.
    if (e.get_return_code() != MQTTASYNC_DISCONNECTED && e.get_return_code() != MQTTASYNC_FAILURE)
      result = FromPaho(e, "disconnect from " + d.options.server_uri);
  }
  // Let the tokens Paho still references finish before anyone destroys the client.
  std::vector<mqtt::token_ptr> pending;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    pending.swap(d.restore_tokens);
  }
  for (auto& t : d.client->get_pending_delivery_tokens()) pending.push_back(t);
  for (const mqtt::token_ptr& t : pending) {
    try {
      t->wait_for(std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             deadline - std::chrono::steady_clock::now())));
    } catch (const mqtt::exception&) {
      // Failed deliveries after a disconnect are expected; the token is complete.
    }
  }
  d.connect_token.reset();
  d.connected_once.store(false);
  if (d.state.load() != ConnectionState::kDisconnected) d.SetState(ConnectionState::kDisconnected, Status::Ok());
  return result;
}

Status MqttTransport::Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) {
  Impl& d = *impl_;
  Status invalid = ValidatePublish(topic, payload.size(), options, d.options.max_payload_size);
  if (invalid.ok()) {
    if (const ConnectionState s = d.state.load();
        s == ConnectionState::kDisconnected || s == ConnectionState::kConnecting) {
      invalid = UnavailableError(d.options.client_id + ": publish on '" + std::string(topic) + "' while " +
                                 std::string(ToString(s)));
    }
  }
  if (!invalid.ok()) {
    d.counters.publish_failures.fetch_add(1);
    return invalid;
  }
  mqtt::delivery_token_ptr tok;
  try {
    auto msg = mqtt::make_message(std::string(topic), payload.data(), payload.size(), options.qos, options.retain);
    if (options.message_expiry_seconds > 0 || !options.response_topic.empty()) {
      mqtt::properties props;
      if (options.message_expiry_seconds > 0)
        props.add(mqtt::property(mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                                 static_cast<int32_t>(options.message_expiry_seconds)));
      if (!options.response_topic.empty()) {
        props.add(mqtt::property(mqtt::property::RESPONSE_TOPIC, options.response_topic));
        if (!options.correlation_data.empty())
          props.add(mqtt::property(mqtt::property::CORRELATION_DATA,
                                   std::string(options.correlation_data.begin(), options.correlation_data.end())));
      }
      msg->set_properties(std::move(props));
    }
    d.AcquirePublishSlot();
    try {
      tok = d.client->publish(msg, nullptr, d.publish_listener);
    } catch (...) {
      d.PublishDone();  // refused: the listener never runs
      throw;
    }
  } catch (const mqtt::exception& e) {
    d.counters.publish_failures.fetch_add(1);
    return FromPaho(e, "publish on '" + std::string(topic) + "'");
  }
  d.counters.published.fetch_add(1);
  if (options.qos == 1 && options.ack_timeout.count() > 0) {
    try {
      if (!tok->wait_for(options.ack_timeout))
        return DeadlineExceededError("no PUBACK for '" + std::string(topic) + "' within " +
                                     std::to_string(options.ack_timeout.count()) + " ms");
    } catch (const mqtt::exception& e) {
      return FromPaho(e, "publish on '" + std::string(topic) + "'");
    }
  }
  return Status::Ok();
}

Status MqttTransport::Subscribe(std::string_view filter, int qos) {
  Impl& d = *impl_;
  if (qos != 0 && qos != 1) return InvalidArgumentError("subscription QoS must be 0 or 1");
  FLT_RETURN_IF_ERROR(ValidateTopicFilter(filter));
  const std::string f(filter);
  mqtt::token_ptr tok;
  {
    // Under mu with the state check, so OnConnected's restore snapshot and this call never
    // both miss (or both send) the filter.
    std::lock_guard<std::mutex> lock(d.mu);
    d.subscriptions[f] = qos;
    if (d.state.load() != ConnectionState::kConnected) return Status::Ok();  // sent on (re)connect
    try {
      tok = d.client->subscribe(f, qos);
    } catch (const mqtt::exception& e) {
      d.subscriptions.erase(f);
      return FromPaho(e, "subscribe to '" + f + "'");
    }
  }
  Status s = d.WaitTokens({tok}, std::chrono::steady_clock::now() + d.options.operation_timeout, "subscribe to '" + f + "'");
  if (!s.ok() && s.code() != StatusCode::kDeadlineExceeded) {
    std::lock_guard<std::mutex> lock(d.mu);
    d.subscriptions.erase(f);  // refused by the broker: do not restore it later
  }
  return s;
}

Status MqttTransport::Unsubscribe(std::string_view filter) {
  Impl& d = *impl_;
  const std::string f(filter);
  mqtt::token_ptr tok;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (d.subscriptions.erase(f) == 0) return NotFoundError("not subscribed to '" + f + "'");
    if (d.state.load() != ConnectionState::kConnected) return Status::Ok();
    try {
      tok = d.client->unsubscribe(f);
    } catch (const mqtt::exception& e) {
      return FromPaho(e, "unsubscribe from '" + f + "'");
    }
  }
  return d.WaitTokens({tok}, std::chrono::steady_clock::now() + d.options.operation_timeout,
                      "unsubscribe from '" + f + "'");
}

size_t MqttTransport::Poll(std::chrono::milliseconds timeout, size_t max_events) {
  return impl_->inbox.Dispatch(timeout, max_events, impl_->on_message, impl_->on_state, impl_->state.load());
}

ConnectionState MqttTransport::state() const { return impl_->state.load(); }

TransportStats MqttTransport::stats() const {
  return impl_->counters.Snapshot(impl_->inbox.dropped(), impl_->inbox.parked());
}

size_t MqttTransport::max_payload_size() const { return impl_->options.max_payload_size; }
const std::string& MqttTransport::client_id() const { return impl_->options.client_id; }

std::pair<std::chrono::seconds, std::chrono::seconds> MqttTransport::reconnect_backoff() const {
  return {impl_->backoff_min, impl_->backoff_max};
}

Result<uint64_t> RaiseFileDescriptorLimit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return InternalError(std::string("getrlimit: ") + std::strerror(errno));
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0)
      return PermissionDeniedError(std::string("setrlimit(RLIMIT_NOFILE): ") + std::strerror(errno));
  }
  return static_cast<uint64_t>(lim.rlim_cur);
}

}  // namespace flotilla::protocol
