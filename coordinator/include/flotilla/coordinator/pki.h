// Fleet PKI files for `flotilla pki init|issue` (ECDSA P-256 via flotilla/security/x509.h,
// never the openssl command line). Layout of a PKI directory:
//
//   ca.crt ca.key                       fleet CA (the key signs every certificate below)
//   coordinator.crt coordinator.key     CN "coordinator": MQTT client and HTTPS server
//   broker.crt broker.key               CN "broker": the broker's mTLS listener
//   devices/<id>.crt devices/<id>.key   CN = device id (`pki issue`)
//
// Private keys are written 0600 with an atomic replace; certificates 0644. Keep ca.key
// offline in production: only `pki issue` needs it, never the running coordinator.
// All functions are thread-safe (no shared state) but two processes issuing into the
// same directory at once may race on file names.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::coordinator {

struct PkiLayout {
  std::filesystem::path dir;
  std::filesystem::path ca_cert() const { return dir / "ca.crt"; }
  std::filesystem::path ca_key() const { return dir / "ca.key"; }
  std::filesystem::path coordinator_cert() const { return dir / "coordinator.crt"; }
  std::filesystem::path coordinator_key() const { return dir / "coordinator.key"; }
  std::filesystem::path broker_cert() const { return dir / "broker.crt"; }
  std::filesystem::path broker_key() const { return dir / "broker.key"; }
  std::filesystem::path device_cert(const std::string& id) const { return dir / "devices" / (id + ".crt"); }
  std::filesystem::path device_key(const std::string& id) const { return dir / "devices" / (id + ".key"); }
};

struct PkiInitOptions {
  std::string ca_name = "flotilla-fleet-ca";
  // Subject alternative names of the broker and coordinator server certificates.
  std::vector<std::string> dns_names = {"localhost"};
  std::vector<std::string> ip_addresses = {"127.0.0.1", "::1"};
  std::chrono::hours ca_validity = std::chrono::hours(24 * 3650);
  std::chrono::hours validity = std::chrono::hours(24 * 825);
  bool overwrite = false;  // replace an existing CA (every issued certificate dies with it)
};

// Creates the CA, coordinator and broker certificates in `dir`. AlreadyExists if a CA is
// already there and !overwrite (so a second `pki init` never orphans a fleet).
Status InitPki(const std::filesystem::path& dir, const PkiInitOptions& options = {});

struct IssuedFiles {
  std::filesystem::path cert;
  std::filesystem::path key;
};

// Issues a client certificate with CN = `device_id` (a safe topic name) signed by the CA
// in `dir`; writes <out_dir or dir/devices>/<id>.crt and .key. AlreadyExists if that
// certificate exists and !overwrite; NotFound if `dir` holds no CA.
Result<IssuedFiles> IssueDeviceCertificate(const std::filesystem::path& dir, const std::string& device_id,
                                           const std::filesystem::path& out_dir = {},
                                           std::chrono::hours validity = std::chrono::hours(24 * 825),
                                           bool overwrite = false);

}  // namespace flotilla::coordinator
