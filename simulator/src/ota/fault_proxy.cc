#include "fault_proxy.h"

#include <httplib.h>

#include <mutex>
#include <thread>

namespace flotilla::simulator::internal {

uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t z = seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t HashName(std::string_view name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

double Unit(uint64_t seed, uint64_t a, uint64_t b) {
  return static_cast<double>(Mix(seed, a, b) >> 11) * (1.0 / 9007199254740992.0);
}

struct FaultProxy::Impl {
  FaultProxyOptions options;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  mutable std::mutex mu;
  std::map<std::string, uint64_t> requests;  // GUARDED_BY(mu) artifact requests per device
  std::map<std::string, uint64_t> faults;    // GUARDED_BY(mu)

  // Whether this request of `device` is faulted, and how (counts it).
  bool Decide(const std::string& device, DownloadFault* kind) {
    if (options.rate <= 0 || options.kinds.empty()) return false;
    std::lock_guard<std::mutex> lock(mu);
    const uint64_t n = requests[device]++;
    const uint64_t d = HashName(device);
    if (Unit(options.seed, d, 2 * n) >= options.rate) return false;
    ++faults[device];
    *kind = options.kinds[Mix(options.seed, d, 2 * n + 1) % options.kinds.size()];
    return true;
  }

  void Handle(const httplib::Request& req, httplib::Response& res) {
    // httplib would apply Range to the response itself; the upstream already did (and
    // decided about If-Range), so its 206 body goes out as it is (as ArtifactServer does).
    const_cast<httplib::Request&>(req).ranges.clear();
    const std::string device = req.matches[1].str();
    const std::string path = "/" + req.matches[2].str();
    const bool artifact = path.rfind("/artifacts/", 0) == 0;
    DownloadFault kind = DownloadFault::kServerError;
    const bool fault = artifact && Decide(device, &kind);
    if (fault && kind == DownloadFault::kServerError) {
      res.status = 503;
      res.set_content("injected fault\n", "text/plain");
      return;
    }
    httplib::Client upstream(options.upstream);
    upstream.set_tcp_nodelay(true);
    upstream.set_read_timeout(std::chrono::seconds(30));
    httplib::Headers headers;
    for (const char* name : {"Range", "If-Range"}) {
      if (req.has_header(name)) headers.emplace(name, req.get_header_value(name));
    }
    auto up = upstream.Get(path, headers);
    if (!up) {
      res.status = 502;
      res.set_content("upstream unreachable\n", "text/plain");
      return;
    }
    res.status = up->status;
    for (const char* name : {"ETag", "Content-Range", "Accept-Ranges"}) {
      if (up->has_header(name)) res.set_header(name, up->get_header_value(name));
    }
    const std::string type =
        up->has_header("Content-Type") ? up->get_header_value("Content-Type") : "application/octet-stream";
    if (!fault) {
      res.set_content(std::move(up->body), type);
      return;
    }
    // Truncated or stalled: the full Content-Length is announced, half the body is sent.
    auto body = std::make_shared<std::string>(std::move(up->body));
    const size_t half = body->size() / 2;
    const bool stall = kind == DownloadFault::kStalled;
    const auto pause = options.stall;
    res.set_content_provider(body->size(), type,
                             [body, half, stall, pause](size_t offset, size_t, httplib::DataSink& sink) {
                               if (offset < half) return sink.write(body->data() + offset, half - offset);
                               if (stall) std::this_thread::sleep_for(pause);
                               return false;  // the connection closes mid-body
                             });
  }
};

FaultProxy::FaultProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FaultProxy::~FaultProxy() { Stop(); }

Result<std::unique_ptr<FaultProxy>> FaultProxy::Start(FaultProxyOptions options) {
  for (DownloadFault k : options.kinds) {
    if (k != DownloadFault::kServerError && k != DownloadFault::kTruncated && k != DownloadFault::kStalled) {
      return InvalidArgumentError("fault proxy: unknown fault kind");
    }
  }
  if (!(options.rate >= 0 && options.rate <= 1)) return InvalidArgumentError("fault proxy: rate must be in [0, 1]");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  Impl* raw = impl.get();
  impl->server.Get(R"(/d/([^/]+)/(.+))",
                   [raw](const httplib::Request& req, httplib::Response& res) { raw->Handle(req, res); });
  impl->server.set_keep_alive_max_count(1000);
  impl->server.set_tcp_nodelay(true);  // see ArtifactServer: Nagle + delayed ACK cost ~40 ms a request
  impl->port = impl->server.bind_to_any_port("127.0.0.1");
  if (impl->port <= 0) return UnavailableError("fault proxy: cannot bind 127.0.0.1");
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!impl->server.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  return std::unique_ptr<FaultProxy>(new FaultProxy(std::move(impl)));
}

std::string FaultProxy::DeviceBaseUrl(std::string_view device) const {
  return "http://127.0.0.1:" + std::to_string(impl_->port) + "/d/" + std::string(device);
}

std::map<std::string, uint64_t> FaultProxy::FaultsPerDevice() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->faults;
}

uint64_t FaultProxy::faults_injected() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  uint64_t n = 0;
  for (const auto& [device, count] : impl_->faults) n += count;
  return n;
}

void FaultProxy::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace flotilla::simulator::internal
