// Coordinator over real sockets: every REST endpoint over HTTP on loopback (auth, bad
// JSON, size caps, Range/ETag downloads, uploads, /metrics as Prometheus text), and the
// fleet PKI accepted by a real Mosquitto with mTLS, with a device enrolling and reporting
// presence through the coordinator's MQTT endpoint.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "flotilla/coordinator/api_server.h"
#include "flotilla/coordinator/coordinator.h"
#include "flotilla/coordinator/pki.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/security/hash.h"
#include "flotilla/v1/round.pb.h"
#include "pki_test_util.h"
#include "prometheus_text.h"

namespace flotilla::coordinator {
namespace {

using json = nlohmann::json;
using testutil::Must;
using namespace std::chrono_literals;

Bytes SealedBoxBytes(size_t ciphertext, uint8_t fill) {
  v1::SealedBox b;
  b.set_ephemeral_public_key(std::string(32, 'e'));
  b.set_nonce(std::string(12, 'n'));
  b.set_ciphertext(std::string(ciphertext, static_cast<char>(fill)));
  return ToBytes(b.SerializeAsString());
}

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = Must(Store::Open(dir_.path()));
    ApiServerOptions o;
    o.max_upload_bytes = 8192;
    o.max_json_bytes = 4096;
    o.round_defaults_json = R"({"min_cohort": 2, "rank": 4})";
    server_ = Must(ApiServer::Start(*store_, metrics_, o));
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
    admin_ = Must(store_->CreateApiToken("ops", std::vector<std::string>{"admin"}, "test")).token;
    reader_ = Must(store_->CreateApiToken("grafana", std::vector<std::string>{"read"}, "test")).token;
    rounds_ = Must(store_->CreateApiToken("ci", std::vector<std::string>{"read", "rounds"}, "test")).token;
  }

  httplib::Headers Auth(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

  // Parses a JSON response, asserting its status.
  json Call(const char* method, const std::string& path, const std::string& token, int want,
            const std::string& body = "", httplib::Headers extra = {}) {
    httplib::Headers h = token.empty() ? httplib::Headers{} : Auth(token);
    for (auto& kv : extra) h.insert(kv);
    httplib::Result r{nullptr, httplib::Error::Unknown};
    const std::string m = method;
    if (m == "GET") r = client_->Get(path, h);
    else if (m == "POST") r = client_->Post(path, h, body, "application/json");
    else if (m == "PUT") r = client_->Put(path, h, body, "application/json");
    if (!r) {
      ADD_FAILURE() << method << " " << path << ": " << httplib::to_string(r.error());
      return json();
    }
    EXPECT_EQ(r->status, want) << method << " " << path << " -> " << r->body;
    json j = json::parse(r->body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r->body;
    if (r->status >= 400) {
      EXPECT_TRUE(j.contains("error") && j["error"].contains("code") && j["error"].contains("message")) << r->body;
    }
    return j;
  }

  void EnrolDevice(const std::string& id) {
    EnrolDeviceRequest r;
    r.device_id = id;
    r.identity_public_key = Bytes(91, 1);
    ASSERT_TRUE(store_->EnrolDevice(r, "test").ok());
  }

  TempDir dir_ = Must(TempDir::Create("flotilla-api"));
  std::unique_ptr<Store> store_;
  Metrics metrics_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<httplib::Client> client_;
  std::string admin_, reader_, rounds_;
};

TEST_F(ApiTest, HealthAndMetricsNeedNoTokenAndMetricsParse) {
  EXPECT_EQ(Call("GET", "/healthz", "", 200)["status"], "ok");
  EnrolDevice("dev-1");
  ASSERT_TRUE(Must(store_->SetPresence("dev-1", PresenceState::kOnline, "s", 1)));
  metrics_.ObserveStageDuration("advertise_keys", 0.4);
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain; version=0.0.4"), std::string::npos);
  auto samples = testutil::ParsePrometheusText(r->body);
  ASSERT_TRUE(samples.ok()) << samples.status().ToString() << "\n" << r->body;
  EXPECT_EQ((*samples)["flotilla_devices_online"], 1);
  EXPECT_EQ((*samples)["flotilla_rounds{state=\"created\"}"], 0);
  EXPECT_EQ((*samples)["flotilla_stage_duration_seconds_count{stage=\"advertise_keys\"}"], 1);
  EXPECT_TRUE(samples->count("flotilla_bytes_in_total"));
  EXPECT_TRUE(samples->count("flotilla_aggregation_seconds_count"));
}

TEST_F(ApiTest, AuthIsRequiredAndScopesAreEnforced) {
  auto r = client_->Get("/api/v1/devices");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  Call("GET", "/api/v1/devices", "flt_0000000000000000_" + std::string(64, '0'), 401);
  Call("GET", "/api/v1/devices", "not-a-token", 401);
  std::string tampered = admin_;
  tampered.back() = tampered.back() == '1' ? '2' : '1';
  Call("GET", "/api/v1/rounds", tampered, 401);
  Call("GET", "/api/v1/devices", reader_, 200);
  EnrolDevice("dev-1");
  Call("POST", "/api/v1/devices/dev-1/revoke", reader_, 403);
  Call("POST", "/api/v1/devices/dev-1/revoke", rounds_, 403);
  Call("POST", "/api/v1/rounds", reader_, 403, "{}");
  Call("POST", "/api/v1/rounds", rounds_, 201, "{}");
  // A revoked token stops working at once.
  const std::string id = Must(store_->AuthenticateApiToken(reader_)).id;
  ASSERT_TRUE(store_->RevokeApiToken(id, "test").ok());
  Call("GET", "/api/v1/devices", reader_, 401);
  // Unknown routes get JSON too.
  Call("GET", "/api/v1/nothing-here", admin_, 404);
}

TEST_F(ApiTest, DevicesListShowGroupsRevokeAndAudit) {
  for (const char* id : {"dev-1", "dev-2", "dev-3"}) EnrolDevice(id);
  json list = Call("GET", "/api/v1/devices?limit=2", reader_, 200);
  ASSERT_EQ(list["devices"].size(), 2u);
  EXPECT_EQ(list["next_after"], "dev-2");
  EXPECT_EQ(Call("GET", "/api/v1/devices?after=dev-2", reader_, 200)["devices"].size(), 1u);
  Call("GET", "/api/v1/devices?limit=0", reader_, 400);
  Call("GET", "/api/v1/devices?limit=abc", reader_, 400);
  Call("GET", "/api/v1/devices?status=zombie", reader_, 400);
  json d = Call("GET", "/api/v1/devices/dev-1", reader_, 200);
  EXPECT_EQ(d["status"], "active");
  EXPECT_EQ(d["key_id"].get<std::string>().size(), 64u);
  Call("GET", "/api/v1/devices/ghost", reader_, 404);

  json g = Call("PUT", "/api/v1/devices/dev-1/groups", admin_, 200, R"({"groups": ["eu", "canary"]})");
  EXPECT_EQ(g["groups"], json::array({"canary", "eu"}));
  EXPECT_EQ(Call("GET", "/api/v1/devices?group=eu", reader_, 200)["devices"].size(), 1u);
  Call("PUT", "/api/v1/devices/dev-1/groups", admin_, 400, R"({"groups": "eu"})");
  Call("PUT", "/api/v1/devices/dev-1/groups", admin_, 400, R"({"groups": ["a b"]})");
  Call("PUT", "/api/v1/devices/dev-1/groups", admin_, 400, R"({"groups": [)");
  Call("PUT", "/api/v1/devices/dev-1/groups", admin_, 400, "[1,2]");
  Call("PUT", "/api/v1/devices/ghost/groups", admin_, 404, R"({"groups": []})");

  json rev = Call("POST", "/api/v1/devices/dev-2/revoke", admin_, 200, R"({"reason": "stolen"})");
  EXPECT_EQ(rev["status"], "revoked");
  EXPECT_EQ(rev["revoked_reason"], "stolen");
  Call("POST", "/api/v1/devices/dev-2/revoke", admin_, 400, R"({"reason": 5})");
  Call("POST", "/api/v1/devices/ghost/revoke", admin_, 404);
  EXPECT_EQ(Call("GET", "/api/v1/devices?status=revoked", reader_, 200)["devices"].size(), 1u);

  json audit = Call("GET", "/api/v1/audit?limit=100", reader_, 200);
  std::vector<std::string> actions;
  for (const auto& e : audit["entries"]) actions.push_back(e["action"]);
  EXPECT_NE(std::find(actions.begin(), actions.end(), "device.revoke"), actions.end());
  EXPECT_NE(std::find(actions.begin(), actions.end(), "device.groups"), actions.end());
  const int64_t last = audit["next_after"];
  EXPECT_EQ(Call("GET", "/api/v1/audit?after=" + std::to_string(last), reader_, 200)["entries"].size(), 0u);
  json first = Call("GET", "/api/v1/audit?limit=1", reader_, 200);
  ASSERT_EQ(first["entries"].size(), 1u);
  EXPECT_EQ(first["entries"][0]["actor"], "test");
  Call("GET", "/api/v1/audit?after=-1", reader_, 400);
  // Revocations made over the API name the token in the audit log.
  bool by_token = false;
  for (const auto& e : audit["entries"]) by_token |= e["actor"].get<std::string>().rfind("api:", 0) == 0;
  EXPECT_TRUE(by_token);
}

TEST_F(ApiTest, RoundsStartListShowCancel) {
  json r = Call("POST", "/api/v1/rounds", rounds_, 201, R"({"group": "eu", "config": {"rank": 8, "steps": 5}})");
  const std::string id = r["id"];
  EXPECT_EQ(r["state"], "created");
  EXPECT_EQ(r["group"], "eu");
  EXPECT_EQ(r["config"]["rank"], 8);       // request wins
  EXPECT_EQ(r["config"]["min_cohort"], 2);  // default filled in
  Call("POST", "/api/v1/rounds", rounds_, 400, R"({"config": 3})");
  Call("POST", "/api/v1/rounds", rounds_, 400, R"({"group": "no/slash"})");
  Call("POST", "/api/v1/rounds", rounds_, 400, "{not json");
  Call("POST", "/api/v1/rounds", rounds_, 409, R"({"id": ")" + id + R"("})");

  EnrolDevice("dev-1");
  EnrolDevice("dev-2");
  std::vector<std::pair<std::string, uint32_t>> cohort = {{"dev-1", 1}, {"dev-2", 2}};
  ASSERT_TRUE(store_->AddParticipants(id, cohort).ok());
  std::vector<StageUpdate> ups = {{"dev-1", "advertise_keys", "ok"}, {"dev-2", "advertise_keys", "dropped"}};
  ASSERT_TRUE(store_->SetParticipantStages(id, ups).ok());
  json show = Call("GET", "/api/v1/rounds/" + id, reader_, 200);
  EXPECT_EQ(show["participants"]["count"], 2);
  EXPECT_EQ(show["participants"]["stages"]["advertise_keys"]["ok"], 1);
  EXPECT_EQ(show["participants"]["stages"]["advertise_keys"]["dropped"], 1);
  Call("GET", "/api/v1/rounds/nope", reader_, 404);
  EXPECT_EQ(Call("GET", "/api/v1/rounds?state=created", reader_, 200)["rounds"].size(), 1u);
  EXPECT_EQ(Call("GET", "/api/v1/rounds?state=failed", reader_, 200)["rounds"].size(), 0u);
  Call("GET", "/api/v1/rounds?state=exploded", reader_, 400);

  json c = Call("POST", "/api/v1/rounds/" + id + "/cancel", rounds_, 202, R"({"reason": "wrong base"})");
  EXPECT_TRUE(c["cancel_requested"]);
  EXPECT_EQ(c["cancel_reason"], "wrong base");
  ASSERT_TRUE(store_->TransitionRound(id, RoundState::kCreated, RoundState::kCancelled, "wrong base", "engine").ok());
  Call("POST", "/api/v1/rounds/" + id + "/cancel", rounds_, 409);
  Call("POST", "/api/v1/rounds/nope/cancel", rounds_, 404);
}

TEST_F(ApiTest, OversizedBodiesAreRefusedBeforeTheyAreRead) {
  const std::string big(5000, ' ');
  json j = Call("POST", "/api/v1/rounds", rounds_, 413, big);
  EXPECT_EQ(j["error"]["code"], "RESOURCE_EXHAUSTED");
  // Unauthenticated and oversized: still no body read, still JSON.
  Call("POST", "/api/v1/rounds", "", 413, big);
  EXPECT_EQ(Call("GET", "/healthz", "", 200)["status"], "ok");  // the server is fine
}

TEST_F(ApiTest, ModelsAndAdaptersListShowAndDownloadWithRangeAndEtag) {
  Bytes content(100000);
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 7 + i / 256);
  ArtifactInfo base = Must(store_->PutArtifact(content, "application/x-gguf"));
  ArtifactInfo adapter = Must(store_->PutArtifact(AsBytes("adapter bytes"), "application/x-gguf"));
  ASSERT_TRUE(store_->AddVersion(VersionKind::kModel, {"base-1", "base", "", "", "", base.sha256, 0, R"({"ppl": 9.5})", 0}, "t").ok());
  ASSERT_TRUE(store_->AddVersion(VersionKind::kAdapter, {"ad-1", "lora", "", "base-1", "r-1", adapter.sha256, 0, "{}", 0}, "t").ok());
  ASSERT_TRUE(store_->AddVersion(VersionKind::kAdapter, {"ad-2", "lora", "ad-1", "base-1", "r-2", adapter.sha256, 0, "{}", 0}, "t").ok());
  json models = Call("GET", "/api/v1/models", reader_, 200);
  ASSERT_EQ(models["models"].size(), 1u);
  EXPECT_EQ(models["models"][0]["metrics"]["ppl"], 9.5);
  EXPECT_EQ(Call("GET", "/api/v1/adapters", reader_, 200)["adapters"].size(), 2u);
  json ad = Call("GET", "/api/v1/adapters/ad-2", reader_, 200);
  EXPECT_EQ(ad["lineage"], json::array({"ad-2", "ad-1"}));
  EXPECT_EQ(ad["base_model_id"], "base-1");
  Call("GET", "/api/v1/models/ad-1", reader_, 404);
  Call("GET", "/api/v1/models/base-1/download", "", 401);

  auto full = client_->Get("/api/v1/models/base-1/download", Auth(reader_));
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 200);
  const std::string etag = "\"" + base.sha256 + "\"";
  EXPECT_EQ(full->get_header_value("ETag"), etag);
  EXPECT_EQ(full->body, std::string(content.begin(), content.end()));

  auto h = Auth(reader_);
  h.emplace("Range", "bytes=1000-1999");
  auto part = client_->Get("/api/v1/models/base-1/download", h);
  ASSERT_TRUE(part);
  EXPECT_EQ(part->status, 206);
  EXPECT_EQ(part->get_header_value("Content-Range"), "bytes 1000-1999/100000");
  EXPECT_EQ(part->body, std::string(content.begin() + 1000, content.begin() + 2000));

  auto hs = Auth(reader_);
  hs.emplace("Range", "bytes=-10");
  auto tail = client_->Get("/api/v1/models/base-1/download", hs);
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, std::string(content.end() - 10, content.end()));

  auto hi = Auth(reader_);
  hi.emplace("Range", "bytes=1000-1999");
  hi.emplace("If-Range", "\"stale\"");
  auto changed = client_->Get("/api/v1/models/base-1/download", hi);
  ASSERT_TRUE(changed);
  EXPECT_EQ(changed->status, 200);  // validator mismatch: whole file

  auto hn = Auth(reader_);
  hn.emplace("If-None-Match", etag);
  auto cached = client_->Get("/api/v1/models/base-1/download", hn);
  ASSERT_TRUE(cached);
  EXPECT_EQ(cached->status, 304);

  auto hr = Auth(reader_);
  hr.emplace("Range", "bytes=200000-");
  auto past = client_->Get("/api/v1/models/base-1/download", hr);
  ASSERT_TRUE(past);
  EXPECT_EQ(past->status, 416);
  EXPECT_EQ(past->get_header_value("Content-Range"), "bytes */100000");
  EXPECT_GE(metrics_.bytes_out(), content.size() + 1000 + 10);

  // A file altered on disk is never served.
  {
    std::ofstream f(store_->artifacts().PathFor(adapter.sha256), std::ios::binary | std::ios::trunc);
    f << "evil bytes!!!";
  }
  Call("GET", "/api/v1/adapters/ad-1/download", reader_, 500);
}

TEST_F(ApiTest, UploadsAreAuthenticatedPerDeviceStreamedCappedAndValidated) {
  EnrolDevice("dev-1");
  EnrolDevice("dev-2");
  RoundRecord round = Must(store_->CreateRound({}, "engine"));
  std::vector<std::pair<std::string, uint32_t>> cohort = {{"dev-1", 1}};
  ASSERT_TRUE(store_->AddParticipants(round.id, cohort).ok());
  const std::string token = Must(store_->UploadToken(round.id, "dev-1"));
  const std::string url = "/api/v1/uploads/" + round.id + "/dev-1";
  EXPECT_EQ(server_->UploadUrl(round.id, "dev-1"), server_->base_url() + url);
  const Bytes box = SealedBoxBytes(3000, 0x42);
  const std::string body(box.begin(), box.end());
  const std::string sha = ToHex(security::Sha256(box));
  const uint64_t in_before = metrics_.bytes_in();

  auto put = [&](const std::string& path, const std::string& tok, const std::string& data, httplib::Headers extra = {}) {
    httplib::Headers h = tok.empty() ? httplib::Headers{} : Auth(tok);
    for (auto& kv : extra) h.insert(kv);
    auto r = client_->Put(path, h, data, "application/octet-stream");
    EXPECT_TRUE(r);
    return r ? r->status : -1;
  };
  EXPECT_EQ(put(url, "", body), 401);
  EXPECT_EQ(put(url, admin_, body), 401);  // admin tokens are not upload tokens
  EXPECT_EQ(put("/api/v1/uploads/" + round.id + "/dev-2", token, body), 401);  // dev-1's token for dev-2's slot
  EXPECT_EQ(put("/api/v1/uploads/" + round.id + "/dev-2", Must(store_->UploadToken(round.id, "dev-2")), body), 403);
  EXPECT_EQ(put(url, token, body, {{"X-Flotilla-Sha256", std::string(64, '0')}}), 400);
  EXPECT_EQ(put(url, token, "definitely not a sealed box"), 400);

  json ok = Call("PUT", url, token, 201, body, {{"X-Flotilla-Sha256", sha}});
  EXPECT_EQ(ok["sha256"], sha);
  EXPECT_EQ(ok["size"], box.size());
  EXPECT_EQ(Must(store_->GetUpload(round.id, "dev-1")).sha256, sha);
  EXPECT_EQ(Must(store_->ReadUpload(round.id, "dev-1", 1 << 20)), box);
  EXPECT_EQ(Call("POST", url, token, 201, body)["sha256"], sha);  // a retry (POST works too)
  Bytes other = SealedBoxBytes(3000, 0x43);
  Call("PUT", url, token, 409, std::string(other.begin(), other.end()));
  EXPECT_GE(metrics_.bytes_in(), in_before + 2 * box.size());

  // Over the cap: refused from Content-Length, and from a chunked body while streaming.
  Bytes huge = SealedBoxBytes(9000, 1);
  EXPECT_EQ(put(url, token, std::string(huge.begin(), huge.end())), 413);
  auto chunked = client_->Put(
      url, Auth(token),
      [&](size_t offset, httplib::DataSink& sink) {
        if (offset >= huge.size()) {
          sink.done();
          return true;
        }
        const size_t n = std::min<size_t>(1000, huge.size() - offset);
        return sink.write(reinterpret_cast<const char*>(huge.data()) + offset, n);
      },
      "application/octet-stream");
  if (chunked) {
    EXPECT_EQ(chunked->status, 413);  // (or the server closed the stream early)
  }
  // Terminal rounds take no uploads.
  ASSERT_TRUE(store_->TransitionRound(round.id, RoundState::kCreated, RoundState::kFailed, "test", "engine").ok());
  Call("PUT", url, token, 409, body);
  EXPECT_EQ(Call("GET", "/healthz", "", 200)["status"], "ok");
}

// ---------------------------------------------------------------- PKI + Mosquitto + MQTT

TEST(CoordinatorMqttTest, PkiIsAcceptedByMosquittoAndDevicesEnrolOverMqtt) {
  testutil::TestFleet fleet;  // `pki init` layout in a temp dir
  const PkiLayout pki{fleet.dir()};
  protocol::MosquittoBrokerOptions bo;
  bo.tls = protocol::MosquittoTlsListenerOptions{pki.ca_cert(), pki.broker_cert(), pki.broker_key(), "coordinator"};
  auto broker = protocol::MosquittoBroker::Start(bo);
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();

  TempDir data = Must(TempDir::Create("flotilla-coord-run"));
  CoordinatorConfig cfg;
  cfg.data_dir = data.path();
  cfg.pki_dir = fleet.dir();
  cfg.http_port = 0;
  cfg.broker = BrokerConfig{(*broker)->tls_uri(), pki.ca_cert(), pki.coordinator_cert(), pki.coordinator_key()};
  auto coord = Coordinator::Start(cfg);
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  std::atomic<bool> stop{false};
  std::thread runner([&] { (*coord)->Run(stop); });

  // A device with a certificate from `pki issue` connects with mTLS...
  auto& dev = fleet.Device("dev-1");
  protocol::MqttTransportOptions to;
  to.server_uri = (*broker)->tls_uri();
  to.client_id = "dev-1";
  to.tls = protocol::MqttTlsOptions{pki.ca_cert().string(), pki.device_cert("dev-1").string(),
                                    pki.device_key("dev-1").string(), true};
  auto t = Must(protocol::MqttTransport::Create(to));
  std::vector<protocol::Message> inbox;
  t->SetMessageHandler([&](const protocol::Message& m) { inbox.push_back(m); });
  ASSERT_TRUE(t->Subscribe("fl/v1/d/dev-1/dn/#", 1).ok());
  ASSERT_TRUE(t->Connect().ok());
  // ...enrols and is answered...
  protocol::PublishOptions po;
  po.ack_timeout = 5s;
  ASSERT_TRUE(t->Publish("fl/v1/d/dev-1/up/event/enrol",
                         testutil::TestFleet::Seal(*dev.signer, testutil::TestFleet::RequestFor(dev), RealClock()), po)
                  .ok());
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (inbox.empty() && std::chrono::steady_clock::now() < deadline) t->Poll(50ms);
  ASSERT_EQ(inbox.size(), 1u);
  EXPECT_EQ(inbox[0].topic, "fl/v1/d/dev-1/dn/cmd/enrolment");
  EXPECT_EQ(Must((*coord)->store().GetDevice("dev-1")).status, DeviceStatus::kActive);
  // ...and reports presence, which shows in /metrics.
  v1::Presence p;
  p.set_state(v1::PRESENCE_STATE_ONLINE);
  p.set_session_id("s1");
  p.set_timestamp_ms(RealClock().NowUnixMillis());
  po.retain = true;
  ASSERT_TRUE(t->Publish("fl/v1/d/dev-1/up/presence", testutil::TestFleet::Seal(*dev.signer, p, RealClock()), po).ok());
  while (Must((*coord)->store().GetDevice("dev-1")).presence != PresenceState::kOnline &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  httplib::Client http("127.0.0.1", (*coord)->http().port());
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("\nflotilla_devices_online 1\n"), std::string::npos) << m->body;

  // A certificate from another CA is refused by the broker.
  testutil::TestFleet other;
  other.Device("dev-9");
  protocol::MqttTransportOptions bad = to;
  bad.client_id = "dev-9";
  bad.tls = protocol::MqttTlsOptions{pki.ca_cert().string(), PkiLayout{other.dir()}.device_cert("dev-9").string(),
                                     PkiLayout{other.dir()}.device_key("dev-9").string(), true};
  bad.automatic_reconnect = false;
  bad.connect_timeout = 5s;
  auto intruder = Must(protocol::MqttTransport::Create(bad));
  EXPECT_FALSE(intruder->Connect().ok());

  ASSERT_TRUE(t->Disconnect().ok());
  stop = true;
  runner.join();
  EXPECT_TRUE((*coord)->Shutdown().ok());
}

}  // namespace
}  // namespace flotilla::coordinator
