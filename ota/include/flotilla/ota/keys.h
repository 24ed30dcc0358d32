// OTA role keys on disk (`flotilla keys init|rotate`).
//
// A key directory holds one PEM file per key, named <role>-<n>.pem, mode 0600:
//   root-1..3 (offline, threshold 2), targets-1 (offline), snapshot-1, timestamp-1,
//   director-1 (online). Retired keys move to retired/.
// With a passphrase each file is "FLOTILLA ENCRYPTED PRIVATE KEY": the PKCS#8 PEM sealed
// with AES-256-GCM under a key from PBKDF2-HMAC-SHA256 (random 16-byte salt, iteration
// count stored in the file, header authenticated as AAD). mbedTLS 2.28 cannot write
// encrypted PKCS#8, hence this documented format (docs/ota.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/security/identity.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

inline constexpr uint32_t kDefaultPbkdf2Iterations = 600'000;

// Signing keys per role and the thresholds root metadata declares for them.
struct RepositoryKeys {
  std::map<v1::RoleType, std::vector<std::shared_ptr<const security::EcdsaPrivateKey>>> keys;
  std::map<v1::RoleType, uint32_t> thresholds;  // missing role: 1

  uint32_t Threshold(v1::RoleType role) const;
  std::vector<const security::EcdsaPrivateKey*> Signers(v1::RoleType role) const;
};

// Writes `key` to `path` (mode 0600, atomically). Empty `passphrase`: plain PKCS#8 PEM.
Status WriteKeyFile(const std::filesystem::path& path, const security::EcdsaPrivateKey& key,
                    std::string_view passphrase, uint32_t pbkdf2_iterations = kDefaultPbkdf2Iterations);
// Reads a key written by WriteKeyFile. Unauthenticated for a wrong passphrase or a
// tampered file; FailedPrecondition if the file is encrypted and no passphrase is given.
Result<security::EcdsaPrivateKey> ReadKeyFile(const std::filesystem::path& path, std::string_view passphrase);

struct KeyInitOptions {
  std::string passphrase;  // empty: unencrypted files
  uint32_t pbkdf2_iterations = kDefaultPbkdf2Iterations;
  uint32_t root_keys = 3;
  uint32_t root_threshold = 2;
};

// Creates the key directory with fresh keys. AlreadyExists if it already holds keys.
// Returns the loaded keys.
Result<RepositoryKeys> InitKeyDirectory(const std::filesystem::path& dir, const KeyInitOptions& options);
// Loads every active key (thresholds: root = min(2, #root keys), others 1).
Result<RepositoryKeys> LoadKeyDirectory(const std::filesystem::path& dir, std::string_view passphrase);
// Replaces the oldest active key of `role` by a fresh one (retired/ keeps the old file).
// Returns the new key id. The repository must then sign a new root (Repository::RotateRoot).
Result<std::string> RotateKey(const std::filesystem::path& dir, v1::RoleType role, std::string_view passphrase,
                              uint32_t pbkdf2_iterations = kDefaultPbkdf2Iterations);

// "root" → ROLE_TYPE_ROOT, ...; InvalidArgument for anything else.
Result<v1::RoleType> ParseRoleName(std::string_view name);

}  // namespace flotilla::ota
