// The cpp-httplib implementation of the agent's HTTP side.
// httplib's client API does not throw; every failure becomes a Status naming the URL.
#include "flotilla/device/blob_client.h"

#include <httplib.h>

#include "flotilla/security/hash.h"

namespace flotilla::device {
namespace {

struct ParsedUrl {
  std::string origin;  // scheme://host[:port]
  std::string path;    // /... (at least "/")
};

Result<ParsedUrl> ParseUrl(std::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string_view::npos || (url.substr(0, scheme) != "http" && url.substr(0, scheme) != "https"))
    return InvalidArgumentError("url needs an http:// or https:// scheme: '" + std::string(url) + "'");
  const size_t path = url.find('/', scheme + 3);
  ParsedUrl p;
  p.origin = std::string(url.substr(0, path));
  p.path = path == std::string_view::npos ? "/" : std::string(url.substr(path));
  if (p.origin.size() <= scheme + 3) return InvalidArgumentError("url has no host: '" + std::string(url) + "'");
  return p;
}

Status HttpStatusError(int status, std::string_view url) {
  const std::string what = "HTTP " + std::to_string(status) + " from " + std::string(url);
  if (status == 404 || status == 410) return NotFoundError(what);
  if (status == 401 || status == 403) return PermissionDeniedError(what);
  if (status == 413) return ResourceExhaustedError(what);
  if (status == 408 || status == 429 || status >= 500) return UnavailableError(what);
  return FailedPreconditionError(what);
}

std::unique_ptr<httplib::Client> MakeClient(const ParsedUrl& url, const HttpBlobClientOptions& options) {
  auto client = std::make_unique<httplib::Client>(url.origin);
  auto split = [](std::chrono::milliseconds ms) {
    return std::make_pair(static_cast<time_t>(ms.count() / 1000), static_cast<time_t>((ms.count() % 1000) * 1000));
  };
  auto [cs, cus] = split(options.connect_timeout);
  auto [rs, rus] = split(options.read_timeout);
  client->set_connection_timeout(cs, cus);
  client->set_read_timeout(rs, rus);
  client->set_write_timeout(rs, rus);
  client->set_follow_location(false);
  client->set_tcp_nodelay(true);
  if (!options.ca_file.empty()) client->set_ca_cert_path(options.ca_file.c_str());
  return client;
}

// Pulls "upload_id":"..." out of a small JSON body without a JSON dependency on devices;
// anything unexpected yields "" (the caller falls back to the sha256).
std::string UploadIdFromBody(std::string_view body) {
  const std::string_view key = "\"upload_id\"";
  size_t p = body.find(key);
  if (p == std::string_view::npos) return {};
  p = body.find('"', body.find(':', p + key.size()));
  if (p == std::string_view::npos) return {};
  const size_t end = body.find('"', p + 1);
  if (end == std::string_view::npos || end - p - 1 > 128) return {};
  return std::string(body.substr(p + 1, end - p - 1));
}

}  // namespace

Result<v1::ClaimCheck> HttpBlobClient::Upload(const v1::UploadTarget& target, std::string_view round_id,
                                              std::string_view device_id, ByteSpan sealed_box) {
  if (target.max_bytes() > 0 && sealed_box.size() > target.max_bytes())
    return ResourceExhaustedError("upload of " + std::to_string(sealed_box.size()) + " bytes exceeds the target's " +
                                  std::to_string(target.max_bytes()) + "-byte limit");
  FLT_ASSIGN_OR_RETURN(ParsedUrl url, ParseUrl(target.url()));
  auto client = MakeClient(url, options_);
  httplib::Headers headers = {{"X-Flotilla-Round", std::string(round_id)},
                              {"X-Flotilla-Device", std::string(device_id)}};
  if (!target.token().empty()) headers.emplace("Authorization", "Bearer " + target.token());
  auto res = client->Post(url.path, headers, reinterpret_cast<const char*>(sealed_box.data()), sealed_box.size(),
                          "application/octet-stream");
  if (!res) return UnavailableError("upload to " + target.url() + " failed: " + httplib::to_string(res.error()));
  if (res->status != 200 && res->status != 201) return HttpStatusError(res->status, target.url());
  const security::Sha256Digest digest = security::Sha256(sealed_box);
  v1::ClaimCheck claim;
  claim.set_url(target.url());
  claim.set_sha256(digest.data(), digest.size());
  claim.set_size(sealed_box.size());
  std::string id = UploadIdFromBody(res->body);
  claim.set_upload_id(id.empty() ? ToHex(digest) : id);
  return claim;
}

Result<Bytes> HttpBlobClient::Fetch(std::string_view url_text, size_t max_bytes) {
  FLT_ASSIGN_OR_RETURN(ParsedUrl url, ParseUrl(url_text));
  auto client = MakeClient(url, options_);
  Bytes out;
  Status failure;
  auto res = client->Get(
      url.path,
      [&](const httplib::Response& r) {
        if (r.status != 200) {
          failure = HttpStatusError(r.status, url_text);
          return false;
        }
        return true;
      },
      [&](const char* data, size_t n) {
        if (out.size() + n > max_bytes) {
          failure = ResourceExhaustedError(std::string(url_text) + " exceeds " + std::to_string(max_bytes) + " bytes");
          return false;
        }
        out.insert(out.end(), reinterpret_cast<const uint8_t*>(data), reinterpret_cast<const uint8_t*>(data) + n);
        return true;
      });
  if (!failure.ok()) return failure;
  if (!res) return UnavailableError("fetch of " + std::string(url_text) + " failed: " + httplib::to_string(res.error()));
  return out;
}

}  // namespace flotilla::device
