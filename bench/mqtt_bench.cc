// mqtt_bench: what 1,000 MQTT clients in one process cost against the harness broker.
//
//   mqtt_bench [--clients N] [--runs R]
//
// Per run, for plain TCP: burst-connect N clients, subscribe each to its own dn topic and
// the group topic, ONE group publish reaching all N (fan-out), one QoS 1 publish from each
// reaching a coordinator (fan-in). For mTLS (ECDSA P-256 certificates, made before timing):
// burst-connect N clients. Prints the median of R runs. Figures, not assertions.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "test_pki.h"
#include "transport_test_support.h"

namespace {

using flotilla::Status;
using namespace flotilla::protocol;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "mqtt_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

struct TlsFiles {
  std::string ca, cert, key;
};

std::vector<std::unique_ptr<MqttTransport>> MakeClients(const std::string& uri, int n,
                                                         const std::vector<TlsFiles>* tls) {
  std::vector<std::unique_ptr<MqttTransport>> out;
  for (int i = 0; i < n; ++i) {
    MqttTransportOptions o;
    o.server_uri = uri;
    o.client_id = "dev-" + std::to_string(i);
    o.keepalive = std::chrono::seconds(300);
    o.connect_timeout = std::chrono::seconds(60);
    o.queue_capacity = 64;
    if (tls) o.tls = MqttTlsOptions{(*tls)[static_cast<size_t>(i)].ca, (*tls)[static_cast<size_t>(i)].cert,
                                    (*tls)[static_cast<size_t>(i)].key, true};
    auto t = MqttTransport::Create(o);
    if (!t.ok()) Die("create client", t.status());
    out.push_back(std::move(*t));
  }
  return out;
}

double BurstConnect(const std::vector<std::unique_ptr<MqttTransport>>& clients) {
  const auto t0 = Clock::now();
  for (const auto& c : clients)
    if (Status s = c->StartConnect(); !s.ok()) Die("start connect", s);
  for (const auto& c : clients)
    if (Status s = c->WaitConnected(std::chrono::seconds(120)); !s.ok()) Die("connect " + c->client_id(), s);
  return Since(t0);
}

struct PlainRun {
  double connect = 0, subscribe = 0, fan_out = 0, fan_in = 0;
};

PlainRun RunPlain(const std::string& uri, int n) {
  PlainRun r;
  auto clients = MakeClients(uri, n, nullptr);
  std::vector<int> got(static_cast<size_t>(n), 0);
  std::vector<Transport*> ptrs;
  for (int i = 0; i < n; ++i) {
    clients[static_cast<size_t>(i)]->SetMessageHandler([&got, i](const Message&) { ++got[static_cast<size_t>(i)]; });
    ptrs.push_back(clients[static_cast<size_t>(i)].get());
  }
  MqttTransportOptions co;
  co.server_uri = uri;
  co.client_id = "coordinator";
  co.queue_capacity = static_cast<size_t>(2 * n);
  auto coord = MqttTransport::Create(co);
  if (!coord.ok()) Die("create coordinator", coord.status());
  std::set<std::string> in;
  (*coord)->SetMessageHandler([&](const Message& m) { in.insert(m.topic); });
  if (Status s = (*coord)->Connect(); !s.ok()) Die("connect coordinator", s);
  if (Status s = (*coord)->Subscribe("fl/v1/d/+/up/#", 1); !s.ok()) Die("subscribe coordinator", s);

  r.connect = BurstConnect(clients);
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto& c = clients[static_cast<size_t>(i)];
    if (Status s = c->Subscribe("fl/v1/d/dev-" + std::to_string(i) + "/dn/#", 1); !s.ok()) Die("subscribe", s);
    if (Status s = c->Subscribe("fl/v1/g/bench/dn/round", 1); !s.ok()) Die("subscribe", s);
  }
  r.subscribe = Since(t0);

  t0 = Clock::now();
  if (Status s = (*coord)->Publish("fl/v1/g/bench/dn/round", "round", {}); !s.ok()) Die("fan-out publish", s);
  const bool out_ok = flotilla::testsupport::PollUntil(
      ptrs, [&] { return std::count(got.begin(), got.end(), 1) == n; }, std::chrono::seconds(120));
  r.fan_out = Since(t0);
  if (!out_ok) Die("fan-out", flotilla::DeadlineExceededError("not every client received the group message"));

  t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    Status s = clients[static_cast<size_t>(i)]->Publish("fl/v1/d/dev-" + std::to_string(i) + "/up/event/ready", "x", {});
    if (!s.ok()) Die("fan-in publish", s);
  }
  const bool in_ok = flotilla::testsupport::PollUntil(
      {coord->get()}, [&] { return in.size() == static_cast<size_t>(n); }, std::chrono::seconds(120));
  r.fan_in = Since(t0);
  if (!in_ok) Die("fan-in", flotilla::DeadlineExceededError("the coordinator missed uplink messages"));
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 1000;
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--clients") == 0) n = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);
  }
  if (n <= 0 || runs <= 0) {
    std::fprintf(stderr, "usage: mqtt_bench [--clients N] [--runs R]\n");
    return 2;
  }
  auto limit = RaiseFileDescriptorLimit();
  if (!limit.ok()) Die("raise fd limit", limit.status());

  auto dir = flotilla::TempDir::Create("flotilla-mqtt-bench");
  if (!dir.ok()) Die("temp dir", dir.status());
  auto pki = flotilla::testsupport::TestPki::Create(dir->path());
  if (!pki.ok()) Die("pki", pki.status());
  std::vector<TlsFiles> tls;
  const auto pki_t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto files = pki->IssueClient("dev-" + std::to_string(i));
    if (!files.ok()) Die("issue client certificate", files.status());
    tls.push_back({pki->ca_cert.string(), files->first.string(), files->second.string()});
  }
  std::printf("issued %d client certificates in %.2f s (not timed below)\n", n, Since(pki_t0));

  MosquittoBrokerOptions bo;
  bo.tls = MosquittoTlsListenerOptions{pki->ca_cert, pki->broker_cert, pki->broker_key, "coordinator"};
  auto broker = MosquittoBroker::Start(bo);
  if (!broker.ok()) Die("start broker", broker.status());

  std::vector<double> connect, subscribe, fan_out, fan_in, tls_connect;
  for (int r = 0; r < runs; ++r) {
    PlainRun p = RunPlain((*broker)->plain_uri(), n);
    connect.push_back(p.connect);
    subscribe.push_back(p.subscribe);
    fan_out.push_back(p.fan_out);
    fan_in.push_back(p.fan_in);
    auto tls_clients = MakeClients((*broker)->tls_uri(), n, &tls);
    tls_connect.push_back(BurstConnect(tls_clients));
    std::printf("run %d: connect %.3f s, subscribe %.3f s, fan-out %.3f s, fan-in %.3f s, mTLS connect %.3f s\n",
                r + 1, p.connect, p.subscribe, p.fan_out, p.fan_in, tls_connect.back());
  }
  std::printf("\n%d clients, one process, Mosquitto on loopback, median of %d runs\n", n, runs);
  std::printf("| step                                        | median s |\n");
  std::printf("|---------------------------------------------|----------|\n");
  std::printf("| connect, plain TCP (burst)                  | %8.3f |\n", Median(connect));
  std::printf("| connect, mTLS ECDSA P-256 (burst)           | %8.3f |\n", Median(tls_connect));
  std::printf("| subscribe x2 per client (sequential, acked) | %8.3f |\n", Median(subscribe));
  std::printf("| fan-out: 1 group publish -> %5d clients    | %8.3f |\n", n, Median(fan_out));
  std::printf("| fan-in: %5d QoS 1 publishes -> 1 client    | %8.3f |\n", n, Median(fan_in));
  return 0;
}
