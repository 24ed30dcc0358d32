#include "flotilla/coordinator/pki.h"

#include <system_error>

#include "flotilla/core/file.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/version.h"
#include "flotilla/security/x509.h"

namespace flotilla::coordinator {
namespace {

namespace fs = std::filesystem;

Status MakeDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("pki: cannot create " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

Status WritePair(const security::CertificateAndKey& pair, const fs::path& cert, const fs::path& key) {
  // Key first: a certificate on disk always has its key next to it.
  FLT_RETURN_IF_ERROR(WriteFileAtomic(key, pair.key_pem, 0600));
  return WriteFileAtomic(cert, pair.cert_pem, 0644);
}

Result<security::CertificateAndKey> LoadCa(const PkiLayout& layout) {
  std::error_code ec;
  if (!fs::exists(layout.ca_key(), ec)) {
    return NotFoundError("pki: no CA in " + layout.dir.string() + " (run `flotilla pki init` first)");
  }
  security::CertificateAndKey ca;
  FLT_ASSIGN_OR_RETURN(ca.cert_pem, ReadFileString(layout.ca_cert(), 1 << 20));
  FLT_ASSIGN_OR_RETURN(ca.key_pem, ReadFileString(layout.ca_key(), 1 << 20));
  return ca;
}

}  // namespace

Status InitPki(const fs::path& dir, const PkiInitOptions& options) {
  const PkiLayout layout{dir};
  std::error_code ec;
  if (!options.overwrite && fs::exists(layout.ca_key(), ec)) {
    return AlreadyExistsError("pki: " + layout.ca_key().string() + " exists (use --force to replace the fleet CA)");
  }
  FLT_RETURN_IF_ERROR(MakeDir(dir));
  FLT_ASSIGN_OR_RETURN(auto ca, security::CreateCertificateAuthority(options.ca_name, options.ca_validity));

  security::CertificateRequest coordinator;
  coordinator.common_name = std::string(protocol::kCoordinatorId);
  coordinator.role = security::CertificateRole::kBoth;
  coordinator.dns_names = options.dns_names;
  coordinator.ip_addresses = options.ip_addresses;
  coordinator.validity = options.validity;
  FLT_ASSIGN_OR_RETURN(auto coordinator_pair, security::IssueCertificate(ca, coordinator));

  security::CertificateRequest broker = coordinator;
  broker.common_name = "broker";
  broker.role = security::CertificateRole::kServer;
  FLT_ASSIGN_OR_RETURN(auto broker_pair, security::IssueCertificate(ca, broker));

  FLT_RETURN_IF_ERROR(WritePair(ca, layout.ca_cert(), layout.ca_key()));
  FLT_RETURN_IF_ERROR(WritePair(coordinator_pair, layout.coordinator_cert(), layout.coordinator_key()));
  FLT_RETURN_IF_ERROR(WritePair(broker_pair, layout.broker_cert(), layout.broker_key()));
  return MakeDir(dir / "devices");
}

Result<IssuedFiles> IssueDeviceCertificate(const fs::path& dir, const std::string& device_id, const fs::path& out_dir,
                                           std::chrono::hours validity, bool overwrite) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("device id", device_id));
  if (device_id == protocol::kCoordinatorId || device_id == "broker") {
    return InvalidArgumentError("pki: '" + device_id + "' is reserved");
  }
  const PkiLayout layout{dir};
  FLT_ASSIGN_OR_RETURN(auto ca, LoadCa(layout));
  const fs::path target = out_dir.empty() ? dir / "devices" : out_dir;
  IssuedFiles files{target / (device_id + ".crt"), target / (device_id + ".key")};
  std::error_code ec;
  if (!overwrite && fs::exists(files.cert, ec)) {
    return AlreadyExistsError("pki: " + files.cert.string() + " exists");
  }
  FLT_RETURN_IF_ERROR(MakeDir(target));
  security::CertificateRequest req;
  req.common_name = device_id;
  req.role = security::CertificateRole::kClient;
  req.validity = validity;
  FLT_ASSIGN_OR_RETURN(auto pair, security::IssueCertificate(ca, req));
  FLT_RETURN_IF_ERROR(WritePair(pair, files.cert, files.key));
  return files;
}

}  // namespace flotilla::coordinator
