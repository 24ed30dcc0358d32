// The device agent's HTTP side: uploading a masked input that does not fit in one MQTT
// message (claim check, ARCHITECTURE.md section 5) and fetching a global adapter's
// trainable vector. Interfaces so tests run in process; HttpBlobClient is the cpp-httplib
// implementation. The format of an adapter vector on the wire is raw little-endian
// float32 (protocol/adapter_vector.h), authenticated by the sha256 the
// signed RoundInvitation / AggregateResult carries.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/adapter_vector.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::device {

// Uploads a serialized SealedBox. Thread-safe (called from the agent's worker).
class UpdateUploader {
 public:
  virtual ~UpdateUploader() = default;
  // Sends `sealed_box` to `target` and returns the claim check to put on MQTT
  // ({url, sha256, size, upload_id}). Errors: Unavailable (network), PermissionDenied
  // (token refused), ResourceExhausted (over target.max_bytes, nothing sent).
  virtual Result<v1::ClaimCheck> Upload(const v1::UploadTarget& target, std::string_view round_id,
                                        std::string_view device_id, ByteSpan sealed_box) = 0;
};

// Fetches bytes by URL. Thread-safe.
class AdapterFetcher {
 public:
  virtual ~AdapterFetcher() = default;
  // The body at `url`, at most `max_bytes` (ResourceExhausted beyond). The caller checks
  // the sha256. NotFound for a 404, Unavailable for network errors.
  virtual Result<Bytes> Fetch(std::string_view url, size_t max_bytes) = 0;
};

// The adapter vector codec shared with the coordinator.
using protocol::DecodeAdapterVector;
using protocol::EncodeAdapterVector;

struct HttpBlobClientOptions {
  std::string ca_file;  // for https:// URLs (empty: system default trust store)
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds read_timeout{30000};
};

// cpp-httplib client. Upload = POST the bytes to target.url with "Authorization: Bearer
// <target.token>" (coordinator endpoint POST /api/v1/uploads/{round}/{device}); the
// claim's sha256 is computed locally, the upload id is the response body's "upload_id"
// (or the hex sha256 when the server sends none). Fetch = GET. http:// and https://.
class HttpBlobClient final : public UpdateUploader, public AdapterFetcher {
 public:
  explicit HttpBlobClient(HttpBlobClientOptions options) : options_(std::move(options)) {}
  Result<v1::ClaimCheck> Upload(const v1::UploadTarget& target, std::string_view round_id,
                                std::string_view device_id, ByteSpan sealed_box) override;
  Result<Bytes> Fetch(std::string_view url, size_t max_bytes) override;

 private:
  HttpBlobClientOptions options_;
};

}  // namespace flotilla::device
