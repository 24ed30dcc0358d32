// DeviceAgent round handlers: announcement -> check-in, invitation -> accept/decline ->
// train + encode + SecAgg stage 1, the SecAgg stages, the aggregate result and aborts.
// docs/rounds.md has the sequence.
#include <optional>

#include "agent_impl.h"
#include "flotilla/aggregation/dp.h"
#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/strategies.h"
#include "flotilla/core/log.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/x509.h"

namespace flotilla::device {

namespace v1 = ::flotilla::v1;
using aggregation::ClientState;

namespace {

bool IsFinalState(std::string_view s) {
  return s == "completed" || s == "aborted" || s == "declined" || s == "abandoned" || s == "not_selected";
}

// What a task hands back to the owner thread.
struct TaskOutcome {
  Status status;             // why the step failed (the round continues unless `next_state` is final)
  std::string next_state;    // empty: no change
  std::string detail;
  Bytes wire;                // what was sent (re-sent after a reconnect)
  std::string topic;
  std::optional<StoredAdapter> adapter;  // a newly fetched global adapter to persist
};

// Owner thread, after a successful step: remember what was sent, record the new state.
void AdvanceRound(DeviceAgent::Impl& self, TaskOutcome& out) {
  if (!out.wire.empty()) {
    self.round->last_wire = std::move(out.wire);
    self.round->last_topic = std::move(out.topic);
  }
  if (IsFinalState(out.next_state)) return self.EndRound(out.next_state, out.detail);
  self.round->state = out.next_state;
  self.SetRoundState(self.round->round_id, self.round->state, self.round->index, "");
}

Bytes Sha256Bytes(ByteSpan data) {
  const security::Sha256Digest d = security::Sha256(data);
  return Bytes(d.begin(), d.end());
}

}  // namespace

// ---------------------------------------------------------------- bookkeeping

void DeviceAgent::Impl::SetRoundState(const std::string& round_id, const std::string& state, uint32_t index,
                                      const std::string& detail) {
  StoredRound row{round_id, state, index, detail, clock.NowUnixMillis()};
  Status s = store->PutRound(row);
  if (!s.ok()) {
    FLT_LOG(kError, "agent") << config.device_id << ": cannot persist round state: " << s.ToString();
  }
  std::lock_guard<std::mutex> lock(status_mu);
  status.last_round_id = round_id;
  status.last_round_state = state;
  status.last_round_detail = detail;
  if (state == "completed") ++status.rounds_completed;
  if (state == "aborted") ++status.rounds_aborted;
}

void DeviceAgent::Impl::EndRound(const std::string& state, const std::string& detail) {
  if (!round) return;
  FLT_LOG(kDebug, "agent") << config.device_id << ": round " << round->round_id << " " << state
                           << (detail.empty() ? "" : ": " + detail);
  SetRoundState(round->round_id, state, round->index, detail);
  round.reset();
}

void DeviceAgent::Impl::Decline(const std::string& round_id, v1::DeclineReason reason, const std::string& detail) {
  v1::RoundResponse resp;
  resp.set_round_id(round_id);
  resp.set_accepted(false);
  resp.set_reason(reason);
  resp.set_detail(detail);
  Status s = Send(resp);
  if (!s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": decline not sent: " << s.ToString();
  }
  if (round && round->round_id == round_id) {
    EndRound("declined", detail);
  } else {
    SetRoundState(round_id, "declined", 0, detail);
  }
}

void DeviceAgent::Impl::ResendLast() {
  if (!round || round->last_wire.empty() || !transport) return;
  protocol::PublishOptions po;
  po.qos = 1;
  Status s = transport->Publish(round->last_topic, round->last_wire, po);
  if (!s.ok()) {
    FLT_LOG(kDebug, "agent") << config.device_id << ": re-send failed: " << s.ToString();
  }
}

void DeviceAgent::Impl::CheckDeadlines() {
  if (round && !task_running && clock.NowUnixMillis() > round->expires_ms) {
    EndRound(round->state == "checked_in" ? "not_selected" : "abandoned", "round deadline passed");
  }
}

// ---------------------------------------------------------------- announcement -> check-in

void DeviceAgent::Impl::HandleAnnouncement(const protocol::OpenedEnvelope& env) {
  auto a = protocol::UnpackPayload<v1::RoundAnnouncement>(env);
  if (!a.ok()) return Reject("round announcement", a.status());
  if (!protocol::IsValidName(a->round_id()))
    return Reject("round announcement", InvalidArgumentError("bad round id"));
  const int64_t now = clock.NowUnixMillis();
  if (a->check_in_deadline_ms() != 0 && now > a->check_in_deadline_ms()) return;  // stale
  if (a->base_model().sha256() != std::string(config.base_model.sha256())) {
    FLT_LOG(kDebug, "agent") << config.device_id << ": round " << a->round_id() << " is for another base model";
    return;
  }
  if (round && round->round_id == a->round_id()) {
    if (round->state != "checked_in") return;  // already in it
    // Re-announced (coordinator restarted before sampling): check in again below.
  } else {
    if (round && round->state != "checked_in") return;  // busy with another round
    auto stored = store->GetRound(a->round_id());
    if (!stored.ok() || stored->has_value()) return;  // done with it (or cannot tell)
  }
  const std::string shortfall = EligibilityShortfall(CurrentEligibility(), config.policy, a->min_eligibility());
  if (!shortfall.empty() || !deps.trainer->HasData()) {
    FLT_LOG(kDebug, "agent") << config.device_id << ": not checking in to " << a->round_id() << ": "
                             << (shortfall.empty() ? "no local data" : shortfall);
    return;
  }
  if (round && round->round_id != a->round_id()) EndRound("not_selected", "a newer round was announced");
  if (DropBefore(a->round_id(), AgentStage::kCheckIn)) return;

  v1::RoundCheckIn checkin;
  checkin.set_round_id(a->round_id());
  *checkin.mutable_eligibility() = CurrentEligibility();
  *checkin.mutable_base_model() = config.base_model;
  {
    std::lock_guard<std::mutex> lock(status_mu);
    checkin.set_adapter_version(adapter.version);
  }
  auto r = std::make_unique<ActiveRound>();
  r->round_id = a->round_id();
  r->state = "checked_in";
  r->expires_ms = (a->check_in_deadline_ms() != 0 ? a->check_in_deadline_ms() : now) + config.round_grace.count();
  Status s = Send(checkin, &r->last_wire, &r->last_topic);
  if (!s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": check-in not sent: " << s.ToString();
    return;
  }
  round = std::move(r);
  SetRoundState(round->round_id, "checked_in", 0, "");
}

// ---------------------------------------------------------------- invitation

void DeviceAgent::Impl::HandleInvitation(const protocol::OpenedEnvelope& env) {
  auto inv = protocol::UnpackPayload<v1::RoundInvitation>(env);
  if (!inv.ok()) return Reject("round invitation", inv.status());
  const std::string& id = inv->round_id();
  if (!protocol::IsValidName(id)) return Reject("round invitation", InvalidArgumentError("bad round id"));
  if (!round || round->round_id != id) {
    auto stored = store->GetRound(id);
    if (!stored.ok() || stored->has_value()) return;  // a redelivery for a round we are done with
    if (round && round->state != "checked_in") return Decline(id, v1::DECLINE_REASON_BUSY, "in another round");
    return Decline(id, v1::DECLINE_REASON_POLICY, "did not check in to this round");
  }
  if (round->state != "checked_in") return ResendLast();  // a repeated invitation: answer again

  const v1::TrainingConfig& tc = inv->training();
  const v1::SecAggConfig& sc = inv->secagg();
  const std::string& our_model = config.base_model.sha256();
  if (sc.round_id() != id) return Reject("round invitation", InvalidArgumentError("SecAgg config names another round"));
  if (tc.base_model_sha256() != our_model || sc.model_sha256() != our_model)
    return Decline(id, v1::DECLINE_REASON_MODEL_MISMATCH, "invitation is for another base model");
  if (tc.trainable_length() == 0 || tc.trainable_length() > config.max_adapter_bytes / sizeof(float))
    return Decline(id, v1::DECLINE_REASON_PARAMETERS_REFUSED,
                   "trainable length " + std::to_string(tc.trainable_length()) + " out of range");
  {
    std::lock_guard<std::mutex> lock(status_mu);
    if (adapter.version != tc.adapter_version() && !tc.adapter_version().empty() &&
        (tc.adapter_url().empty() || !deps.fetcher))
      return Decline(id, v1::DECLINE_REASON_MODEL_MISMATCH, "adapter " + tc.adapter_version() + " not available");
  }
  const std::string shortfall = EligibilityShortfall(CurrentEligibility(), config.policy, v1::Eligibility());
  if (!shortfall.empty()) return Decline(id, v1::DECLINE_REASON_NOT_ELIGIBLE, shortfall);
  if (!deps.trainer->HasData()) return Decline(id, v1::DECLINE_REASON_NO_DATA, "no local samples");
  if (inv->coordinator_box_public_key().size() != security::kX25519KeySize)
    return Decline(id, v1::DECLINE_REASON_PARAMETERS_REFUSED, "coordinator box key is not 32 bytes");
  const bool hardened = sc.profile() != v1::SEC_AGG_PROFILE_CURIOUS;
  const bool certified_keys = hardened && !deps.peer_verifier && !config.fleet_ca_pem.empty();
  if (hardened && !deps.peer_verifier && !certified_keys)
    return Decline(id, v1::DECLINE_REASON_PARAMETERS_REFUSED, "hardened profile needs neighbour keys or a fleet CA");

  aggregation::SecAggClientOptions co;
  std::shared_ptr<security::KeyRing> peer_keys;
  if (hardened) {
    co.signer = deps.signer;
    if (certified_keys) {
      peer_keys = std::make_shared<security::KeyRing>();
      co.verifier = peer_keys;
    } else {
      co.verifier = deps.peer_verifier;
    }
  }
  std::copy(inv->coordinator_box_public_key().begin(), inv->coordinator_box_public_key().end(),
            co.coordinator_box_key.begin());
  co.rng = &random;
  co.crypto = &crypto;
  auto client = aggregation::SecAggClient::Open(sc, std::move(co));
  if (!client.ok()) return Decline(id, v1::DECLINE_REASON_PARAMETERS_REFUSED, client.status().message());

  round->invitation = std::move(*inv);
  round->client = std::move(*client);
  round->peer_keys = std::move(peer_keys);
  round->index = sc.self_index();
  const v1::StageDeadlines& d = round->invitation.secagg().deadlines();
  const int64_t last = std::max({d.advertise_keys_ms(), d.share_keys_ms(), d.masked_input_ms(),
                                 d.consistency_check_ms(), d.unmask_ms(), round->invitation.accept_deadline_ms()});
  round->expires_ms = (last != 0 ? last : clock.NowUnixMillis()) + config.round_grace.count();
  round->state = "accepted";
  SetRoundState(id, "accepted", round->index, "");
  if (DropBefore(id, AgentStage::kResponse)) return EndRound("abandoned", "test: dropped before responding");

  v1::RoundResponse resp;
  resp.set_round_id(id);
  resp.set_accepted(true);
  if (Status s = Send(resp, &round->last_wire, &round->last_topic); !s.ok()) {
    FLT_LOG(kWarn, "agent") << config.device_id << ": acceptance not sent: " << s.ToString();
  }

  // Train, encode and advertise keys as one task.
  StoredAdapter current;
  {
    std::lock_guard<std::mutex> lock(status_mu);
    current = adapter;
  }
  ActiveRound* r = round.get();
  RunTask([this, r, current = std::move(current)]() -> std::function<void()> {
    TaskOutcome out;
    const v1::TrainingConfig& train = r->invitation.training();
    const v1::SecAggConfig& agg = r->invitation.secagg();
    const size_t m = train.trainable_length();
    auto fail = [&](Status s) {
      out.status = std::move(s);
      out.next_state = "aborted";
      out.detail = out.status.message();
    };
    do {
      // 1. The global adapter the round starts from.
      std::vector<float> global;
      if (current.version == train.adapter_version() && current.values.size() == m) {
        global = current.values;
      } else if (train.adapter_version().empty()) {
        global.assign(m, 0.0f);  // the initial adapter: B = 0 (FedIT: the trainer seeds A)
      } else {
        auto bytes = deps.fetcher->Fetch(train.adapter_url(), m * sizeof(float));
        if (!bytes.ok()) {
          fail(bytes.status().WithContext("fetching adapter " + train.adapter_version()));
          break;
        }
        Bytes sha = Sha256Bytes(*bytes);
        if (AsStringView(sha) != train.adapter_sha256()) {
          fail(DataLossError("adapter " + train.adapter_version() + " does not match its sha256"));
          break;
        }
        auto values = DecodeAdapterVector(*bytes, m);
        if (!values.ok()) {
          fail(values.status());
          break;
        }
        global = *values;
        out.adapter = StoredAdapter{train.adapter_version(), std::move(sha), std::move(*values)};
      }
      // 2. Local training.
      auto trained = deps.trainer->Train(r->round_id, train, global);
      if (!trained.ok()) {
        fail(trained.status().WithContext("local training"));
        break;
      }
      if (trained->delta.size() != m || trained->examples == 0) {
        fail(InternalError("trainer returned " + std::to_string(trained->delta.size()) + " values for " +
                           std::to_string(m) + " (examples " + std::to_string(trained->examples) + ")"));
        break;
      }
      // 3. FedAvg weight in (0, 1], then clip + fixed point (+ DP noise when configured).
      const double cap = train.max_examples();
      const double weight =
          cap > 0 ? std::min<double>(static_cast<double>(trained->examples), cap) / cap : 1.0;
      auto payload = aggregation::WeightedPayload(trained->delta, weight, 1.0);
      if (!payload.ok()) {
        fail(payload.status());
        break;
      }
      aggregation::PrgRandom prg(random);
      Result<std::vector<uint32_t>> encoded = InternalError("unset");
      if (agg.dp().mechanism() != v1::NOISE_MECHANISM_UNSPECIFIED) {
        auto params = aggregation::DpParamsFor(agg);
        if (!params.ok()) {
          fail(params.status());
          break;
        }
        std::vector<float> as_float(payload->begin(), payload->end());
        encoded = aggregation::EncodeWithDp(as_float, *params, prg);
      } else {
        aggregation::FixedPointConfig fp{agg.bit_width(), agg.quant_bits(), agg.clip_bound()};
        encoded = aggregation::EncodeFixedPoint(std::span<const double>(*payload), fp, prg);
      }
      if (!encoded.ok()) {
        fail(encoded.status());
        break;
      }
      r->input = std::move(*encoded);
      if (deps.test_plaintext_hook) {
        deps.test_plaintext_hook(
            PlaintextUpdateRecord{config.device_id, r->round_id, r->index, trained->delta, weight, r->input});
      }
      // 4. SecAgg stage 1.
      if (DropBefore(r->round_id, AgentStage::kAdvertiseKeys)) {
        out.next_state = "abandoned";
        out.detail = "test: dropped before advertising keys";
        break;
      }
      auto advert = r->client->Start();
      if (!advert.ok()) {
        fail(advert.status());
        break;
      }
      if (r->invitation.secagg().profile() != v1::SEC_AGG_PROFILE_CURIOUS && config.advertise_certificate &&
          !certificate_der.empty())
        advert->set_certificate_der(certificate_der.data(), certificate_der.size());
      out.status = Send(*advert, &out.wire, &out.topic);
      out.next_state = "advertised";
    } while (false);
    return [this, out = std::move(out)]() mutable {
      if (out.adapter) {
        Status s = store->SaveAdapter(*out.adapter, clock.NowUnixMillis());
        if (s.ok()) {
          std::lock_guard<std::mutex> lock(status_mu);
          adapter = std::move(*out.adapter);
          status.adapter_version = adapter.version;
          status.adapter_sha256 = adapter.sha256;
        }
      }
      if (!round) return;
      if (!out.status.ok()) {
        FLT_LOG(kWarn, "agent") << config.device_id << ": " << out.status.ToString();
      }
      if (out.next_state == "aborted") {
        v1::RoundAbort abort;
        abort.set_round_id(round->round_id);
        abort.set_reason(v1::ABORT_REASON_INTERNAL);
        abort.set_detail(out.detail);
        Send(abort).IgnoreError();
      }
      AdvanceRound(*this, out);
    };
  });
}

// ---------------------------------------------------------------- SecAgg stages

Status DeviceAgent::Impl::LearnCertifiedKeys(ActiveRound& r, const v1::NeighbourKeys& m) {
  // The client then checks each advert's signature under the key its certificate carries;
  // a neighbour without a valid certificate fails the stage like a bad signature would.
  for (const v1::AdvertiseKeys& a : m.adverts()) {
    auto key = security::VerifiedCertificateKey(config.fleet_ca_pem, AsBytes(a.certificate_der()), a.device_id());
    if (!key.ok()) return UnauthenticatedError("advert of " + std::to_string(a.index()) + ": " + key.status().message());
    r.peer_keys->Add(a.device_id(), std::move(*key));
  }
  return Status::Ok();
}

void DeviceAgent::Impl::HandleSecAggMessage(const protocol::OpenedEnvelope& env) {
  // Unpack on the owner thread (cheap), run the stage as a task (X25519, mask expansion).
  std::string round_id;
  std::function<Result<AgentStage>(ActiveRound&, TaskOutcome&)> step;
  auto bind = [&](auto parsed, auto handle) -> Status {
    if (!parsed.ok()) return parsed.status();
    round_id = parsed->round_id();
    step = [this, msg = std::move(*parsed), handle](ActiveRound& r, TaskOutcome& out) -> Result<AgentStage> {
      return handle(this, r, msg, out);
    };
    return Status::Ok();
  };
  Status parsed;
  switch (env.payload_type) {
    case v1::PAYLOAD_TYPE_NEIGHBOUR_KEYS:
      parsed = bind(protocol::UnpackPayload<v1::NeighbourKeys>(env),
                    [](Impl* self, ActiveRound& r, const v1::NeighbourKeys& m, TaskOutcome& out) -> Result<AgentStage> {
                      if (r.peer_keys) FLT_RETURN_IF_ERROR(self->LearnCertifiedKeys(r, m));
                      FLT_ASSIGN_OR_RETURN(auto reply, r.client->HandleNeighbourKeys(m));
                      if (self->DropBefore(r.round_id, AgentStage::kShareKeys)) return AgentStage::kShareKeys;
                      FLT_RETURN_IF_ERROR(self->Send(reply, &out.wire, &out.topic));
                      out.next_state = "shares_sent";
                      return AgentStage::kShareKeys;
                    });
      break;
    case v1::PAYLOAD_TYPE_FORWARDED_SHARES:
      parsed = bind(protocol::UnpackPayload<v1::ForwardedShares>(env),
                    [](Impl* self, ActiveRound& r, const v1::ForwardedShares& m, TaskOutcome& out) -> Result<AgentStage> {
                      FLT_ASSIGN_OR_RETURN(v1::MaskedInput reply, r.client->HandleForwardedShares(m, r.input));
                      if (self->DropBefore(r.round_id, AgentStage::kMaskedInput)) return AgentStage::kMaskedInput;
                      if (reply.ByteSizeLong() + protocol::kEnvelopeOverheadBytes > self->config.max_inline_envelope_bytes) {
                        // Too big for MQTT: upload the sealed box, send the claim check.
                        if (!self->deps.uploader)
                          return FailedPreconditionError("masked input needs an upload but no uploader is set");
                        const std::string box = reply.inline_box().SerializeAsString();
                        FLT_ASSIGN_OR_RETURN(v1::ClaimCheck claim,
                                             self->deps.uploader->Upload(r.invitation.upload(), r.round_id,
                                                                         self->config.device_id, AsBytes(box)));
                        *reply.mutable_claim() = std::move(claim);
                      }
                      FLT_RETURN_IF_ERROR(self->Send(reply, &out.wire, &out.topic));
                      out.next_state = "masked_input_sent";
                      return AgentStage::kMaskedInput;
                    });
      break;
    case v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST:
      parsed = bind(protocol::UnpackPayload<v1::ConsistencyCheckRequest>(env),
                    [](Impl* self, ActiveRound& r, const v1::ConsistencyCheckRequest& m,
                       TaskOutcome& out) -> Result<AgentStage> {
                      FLT_ASSIGN_OR_RETURN(auto reply, r.client->HandleConsistencyCheck(m));
                      if (self->DropBefore(r.round_id, AgentStage::kConsistencyCheck))
                        return AgentStage::kConsistencyCheck;
                      FLT_RETURN_IF_ERROR(self->Send(reply, &out.wire, &out.topic));
                      out.next_state = "consistency_signed";
                      return AgentStage::kConsistencyCheck;
                    });
      break;
    case v1::PAYLOAD_TYPE_UNMASK_REQUEST:
      parsed = bind(protocol::UnpackPayload<v1::UnmaskRequest>(env),
                    [](Impl* self, ActiveRound& r, const v1::UnmaskRequest& m, TaskOutcome& out) -> Result<AgentStage> {
                      FLT_ASSIGN_OR_RETURN(auto reply, r.client->HandleUnmaskRequest(m));
                      if (self->DropBefore(r.round_id, AgentStage::kUnmask)) return AgentStage::kUnmask;
                      FLT_RETURN_IF_ERROR(self->Send(reply, &out.wire, &out.topic));
                      out.next_state = "unmask_sent";
                      return AgentStage::kUnmask;
                    });
      break;
    default: return;
  }
  if (!parsed.ok()) return Reject(protocol::PayloadTypeName(env.payload_type), parsed);
  if (!round || round->round_id != round_id || !round->client) {
    return Reject(protocol::PayloadTypeName(env.payload_type),
                  FailedPreconditionError("not in round '" + round_id + "'"));
  }
  ActiveRound* r = round.get();
  RunTask([this, r, step = std::move(step)]() -> std::function<void()> {
    TaskOutcome out;
    auto stage = step(*r, out);
    bool client_aborted = r->client->state() == ClientState::kAborted;
    std::optional<v1::RoundAbort> abort;
    if (!stage.ok()) {
      out.status = stage.status();
      if (client_aborted) abort = r->client->AbortMessage();
    } else if (out.next_state.empty()) {
      // The test hook dropped the message: this device silently leaves the round.
      out.next_state = "abandoned";
      out.detail = "test: dropped before " + std::string(ToString(*stage));
    }
    if (abort) {
      abort->set_round_id(r->round_id);
      Send(*abort).IgnoreError();
    }
    return [this, out = std::move(out), client_aborted]() mutable {
      if (!round) return;
      if (!out.status.ok()) {
        if (client_aborted) return EndRound("aborted", out.status.message());
        if (out.status.code() == StatusCode::kFailedPrecondition && out.next_state.empty()) {
          // A repeated stage message (the client refused it unchanged): the coordinator
          // re-sends to devices it has not heard from, so our answer was probably lost.
          FLT_LOG(kDebug, "agent") << config.device_id << ": " << out.status.ToString();
          return ResendLast();
        }
        return EndRound("aborted", out.status.message());
      }
      AdvanceRound(*this, out);
    };
  });
}

// ---------------------------------------------------------------- outcome

void DeviceAgent::Impl::HandleAggregateResult(const protocol::OpenedEnvelope& env) {
  auto res = protocol::UnpackPayload<v1::AggregateResult>(env);
  if (!res.ok()) return Reject("aggregate result", res.status());
  if (!round || round->round_id != res->round_id() || !round->client) {
    FLT_LOG(kDebug, "agent") << config.device_id << ": aggregate result for a round we are not in: " << res->round_id();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(status_mu);
    if (adapter.version == res->new_adapter_version()) return EndRound("completed", "");
  }
  if (res->adapter_url().empty() || !deps.fetcher) {
    return EndRound("completed", "new adapter " + res->new_adapter_version() + " not fetched (no url or fetcher)");
  }
  const size_t m = round->invitation.training().trainable_length();
  RunTask([this, res = std::move(*res), m]() -> std::function<void()> {
    Result<StoredAdapter> fetched = [&]() -> Result<StoredAdapter> {
      FLT_ASSIGN_OR_RETURN(Bytes bytes, deps.fetcher->Fetch(res.adapter_url(), m * sizeof(float)));
      Bytes sha = Sha256Bytes(bytes);
      if (AsStringView(sha) != res.adapter_sha256())
        return DataLossError("adapter " + res.new_adapter_version() + " does not match its sha256");
      FLT_ASSIGN_OR_RETURN(std::vector<float> values, DecodeAdapterVector(bytes, m));
      return StoredAdapter{res.new_adapter_version(), std::move(sha), std::move(values)};
    }();
    return [this, fetched = std::move(fetched)]() mutable {
      std::string detail;
      if (fetched.ok()) {
        Status s = store->SaveAdapter(*fetched, clock.NowUnixMillis());
        if (s.ok()) {
          std::lock_guard<std::mutex> lock(status_mu);
          adapter = std::move(*fetched);
          status.adapter_version = adapter.version;
          status.adapter_sha256 = adapter.sha256;
        } else {
          detail = "adapter not persisted: " + s.message();
        }
      } else {
        detail = "adapter fetch failed: " + fetched.status().message();
        FLT_LOG(kWarn, "agent") << config.device_id << ": " << detail;
      }
      EndRound("completed", detail);
      PublishReported().IgnoreError();
    };
  });
}

void DeviceAgent::Impl::HandleRoundAbort(const protocol::OpenedEnvelope& env) {
  auto abort = protocol::UnpackPayload<v1::RoundAbort>(env);
  if (!abort.ok()) return Reject("round abort", abort.status());
  if (!round || round->round_id != abort->round_id()) return;
  if (round->client) round->client->HandleAbort(*abort);
  EndRound("aborted", "coordinator: " + v1::AbortReason_Name(abort->reason()) + " " + abort->detail());
}

}  // namespace flotilla::device
