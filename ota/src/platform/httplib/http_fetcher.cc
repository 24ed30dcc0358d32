// cpp-httplib adapter for ArtifactFetcher. httplib never throws here (no exceptions in
// its client API); every failure becomes a Status with the URL path.
#include <httplib.h>

#include <chrono>
#include <optional>

#include "flotilla/ota/fetcher.h"

namespace flotilla::ota {
namespace {

Status HttpStatusError(int status, const std::string& path) {
  const std::string what = "HTTP " + std::to_string(status) + " for " + path;
  if (status == 404 || status == 410) return NotFoundError(what);
  if (status == 401 || status == 403) return PermissionDeniedError(what);
  if (status == 408 || status == 429 || status >= 500) return UnavailableError(what);
  return FailedPreconditionError(what);
}

// Parses "bytes a-b/total" and returns a.
std::optional<uint64_t> ContentRangeStart(const std::string& v) {
  if (v.rfind("bytes ", 0) != 0) return std::nullopt;
  uint64_t a = 0;
  size_t i = 6;
  if (i >= v.size() || v[i] < '0' || v[i] > '9') return std::nullopt;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) a = a * 10 + static_cast<uint64_t>(v[i] - '0');
  if (i >= v.size() || v[i] != '-') return std::nullopt;
  return a;
}

}  // namespace

struct HttpFetcher::Impl {
  HttpFetcherOptions options;
  std::string prefix;  // path part of base_url
  std::unique_ptr<httplib::Client> client;
};

HttpFetcher::HttpFetcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpFetcher::~HttpFetcher() = default;

Result<std::unique_ptr<HttpFetcher>> HttpFetcher::Create(HttpFetcherOptions options) {
  const std::string& url = options.base_url;
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return InvalidArgumentError("HttpFetcher: base_url needs a scheme: " + url);
  const size_t path_start = url.find('/', scheme + 3);
  auto impl = std::make_unique<Impl>();
  const std::string host = path_start == std::string::npos ? url : url.substr(0, path_start);
  impl->prefix = path_start == std::string::npos ? "" : url.substr(path_start);
  while (!impl->prefix.empty() && impl->prefix.back() == '/') impl->prefix.pop_back();
  impl->client = std::make_unique<httplib::Client>(host);
  if (!impl->client->is_valid()) return InvalidArgumentError("HttpFetcher: unusable base_url " + url);
  auto secs = [](std::chrono::milliseconds ms) { return std::make_pair(ms.count() / 1000, (ms.count() % 1000) * 1000); };
  auto [cs, cus] = secs(options.connect_timeout);
  auto [rs, rus] = secs(options.read_timeout);
  impl->client->set_connection_timeout(static_cast<time_t>(cs), static_cast<time_t>(cus));
  impl->client->set_read_timeout(static_cast<time_t>(rs), static_cast<time_t>(rus));
  impl->client->set_keep_alive(true);
  impl->client->set_tcp_nodelay(true);  // small requests: avoid Nagle/delayed-ACK stalls
  impl->client->set_follow_location(false);
  impl->options = std::move(options);
  return std::unique_ptr<HttpFetcher>(new HttpFetcher(std::move(impl)));
}

Result<Bytes> HttpFetcher::FetchMetadata(const std::string& path, size_t max_bytes) {
  Bytes out;
  Status cap;
  RangeRequest req;
  req.path = path;
  auto r = FetchRange(
      req, [](const RangeResponse&) { return Status::Ok(); },
      [&](ByteSpan data) {
        if (out.size() + data.size() > max_bytes) {
          cap = ResourceExhaustedError("metadata " + path + " exceeds " + std::to_string(max_bytes) + " bytes");
          return cap;
        }
        out.insert(out.end(), data.begin(), data.end());
        return Status::Ok();
      });
  if (!r.ok()) return r.status();
  return out;
}

Result<RangeResponse> HttpFetcher::FetchRange(const RangeRequest& request,
                                              const std::function<Status(const RangeResponse&)>& on_headers,
                                              const std::function<Status(ByteSpan)>& on_data) {
  if (request.path.find("..") != std::string::npos) return InvalidArgumentError("fetch: path escapes the repository");
  const std::string path = impl_->prefix + "/" + request.path;
  httplib::Headers headers;
  if (request.offset > 0 || request.length > 0) {
    std::string range = "bytes=" + std::to_string(request.offset) + "-";
    if (request.length > 0) range += std::to_string(request.offset + request.length - 1);
    headers.emplace("Range", range);
    if (!request.if_range.empty()) headers.emplace("If-Range", request.if_range);
  }
  RangeResponse resp;
  Status failure;  // set by a callback that stopped the transfer
  bool got_headers = false;
  const auto start = std::chrono::steady_clock::now();
  uint64_t received = 0;
  const auto& opt = impl_->options;
  auto result = impl_->client->Get(
      path, headers,
      [&](const httplib::Response& r) {
        got_headers = true;
        resp.http_status = r.status;
        resp.etag = r.get_header_value("ETag");
        if (r.status != 200 && r.status != 206) {
          failure = HttpStatusError(r.status, request.path);
          return false;
        }
        if (r.status == 206) {
          auto a = ContentRangeStart(r.get_header_value("Content-Range"));
          if (!a || *a != request.offset) {
            failure = FailedPreconditionError("HTTP 206 for " + request.path + " with a Content-Range other than asked");
            return false;
          }
          resp.body_offset = *a;
        }
        failure = on_headers(resp);
        return failure.ok();
      },
      [&](const char* data, size_t n) {
        received += n;
        failure = on_data(ByteSpan(reinterpret_cast<const uint8_t*>(data), n));
        if (!failure.ok()) return false;
        if (opt.min_bytes_per_second > 0) {
          const auto elapsed = std::chrono::steady_clock::now() - start;
          if (elapsed > opt.min_speed_grace) {
            const double secs = std::chrono::duration<double>(elapsed).count();
            if (static_cast<double>(received) / secs < static_cast<double>(opt.min_bytes_per_second)) {
              failure = DeadlineExceededError("download of " + request.path + " slower than " +
                                              std::to_string(opt.min_bytes_per_second) + " B/s");
              return false;
            }
          }
        }
        return true;
      });
  if (!failure.ok()) return failure;
  if (!result) {
    // Refused, reset, timed out or cut mid-body: all transient from the device's view.
    if (result.error() == httplib::Error::Read && !got_headers) {
      return UnavailableError("fetch " + request.path + ": connection closed before a response");
    }
    return UnavailableError("fetch " + request.path + ": " + httplib::to_string(result.error()));
  }
  if (result->status != 200 && result->status != 206) return HttpStatusError(result->status, request.path);
  return resp;
}

}  // namespace flotilla::ota
