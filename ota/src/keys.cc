#include "flotilla/ota/keys.h"

#include <algorithm>

#include "flotilla/core/file.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/security/aead.h"
#include "flotilla/security/csprng.h"
#include "numbered_name.h"
#include "platform/mbedtls/passphrase.h"

namespace flotilla::ota {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kEncBegin = "-----BEGIN FLOTILLA ENCRYPTED PRIVATE KEY-----\n";
constexpr std::string_view kEncEnd = "-----END FLOTILLA ENCRYPTED PRIVATE KEY-----\n";
constexpr std::string_view kMagic = "FLTKEY1";  // + NUL
constexpr size_t kSaltSize = 16;
constexpr size_t kHeaderSize = 8 + 4 + kSaltSize;
constexpr uint32_t kMaxIterations = 10'000'000;

Result<Bytes> DeriveKey(std::string_view passphrase, ByteSpan salt, uint32_t iterations) {
  return internal::Pbkdf2HmacSha256(passphrase, salt, iterations, 32);
}

// Active key files of `role` in `dir`, sorted by their number.
std::vector<std::pair<int, fs::path>> RoleFiles(const fs::path& dir, v1::RoleType role) {
  std::vector<std::pair<int, fs::path>> out;
  const std::string prefix = std::string(RoleName(role)) + "-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto n = internal::ParseNumberedName(e.path().filename().string(), prefix, ".pem");
    if (e.is_regular_file() && n && *n < 1'000'000) out.emplace_back(static_cast<int>(*n), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

uint32_t RepositoryKeys::Threshold(v1::RoleType role) const {
  auto it = thresholds.find(role);
  return it == thresholds.end() ? 1 : it->second;
}

std::vector<const security::EcdsaPrivateKey*> RepositoryKeys::Signers(v1::RoleType role) const {
  std::vector<const security::EcdsaPrivateKey*> out;
  auto it = keys.find(role);
  if (it == keys.end()) return out;
  for (const auto& k : it->second) out.push_back(k.get());
  return out;
}

Status WriteKeyFile(const fs::path& path, const security::EcdsaPrivateKey& key, std::string_view passphrase,
                    uint32_t pbkdf2_iterations) {
  std::string pem = key.ToPem();
  if (passphrase.empty()) {
    Status s = WriteFileAtomic(path, pem, 0600);
    internal::Wipe(pem);
    return s;
  }
  if (pbkdf2_iterations == 0 || pbkdf2_iterations > kMaxIterations) {
    return InvalidArgumentError("key file: PBKDF2 iterations out of range");
  }
  Bytes header(kMagic.begin(), kMagic.end());
  header.push_back(0);
  for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<uint8_t>(pbkdf2_iterations >> shift));
  Bytes salt(kSaltSize), nonce(security::kAesGcmNonceSize);
  security::SystemCsprng().Fill(salt);
  security::SystemCsprng().Fill(nonce);
  header.insert(header.end(), salt.begin(), salt.end());
  FLT_ASSIGN_OR_RETURN(Bytes k, DeriveKey(passphrase, salt, pbkdf2_iterations));
  auto sealed = security::AesGcmSeal(k, nonce, AsBytes(pem), header);
  internal::Wipe(k);
  internal::Wipe(pem);
  FLT_RETURN_IF_ERROR(sealed.status());
  Bytes blob = header;
  blob.insert(blob.end(), nonce.begin(), nonce.end());
  blob.insert(blob.end(), sealed->begin(), sealed->end());
  std::string b64 = internal::Base64Encode(blob);
  std::string text(kEncBegin);
  for (size_t i = 0; i < b64.size(); i += 64) text += b64.substr(i, 64) + "\n";
  text += kEncEnd;
  return WriteFileAtomic(path, text, 0600);
}

Result<security::EcdsaPrivateKey> ReadKeyFile(const fs::path& path, std::string_view passphrase) {
  FLT_ASSIGN_OR_RETURN(std::string text, ReadFileString(path, 64 * 1024));
  if (text.rfind(kEncBegin, 0) != 0) {
    auto key = security::EcdsaPrivateKey::FromPem(text);
    internal::Wipe(text);
    if (!key.ok()) return std::move(key).status().WithContext("reading key file " + path.string());
    return key;
  }
  if (passphrase.empty()) return FailedPreconditionError("key file " + path.string() + " is encrypted: passphrase needed");
  const size_t end = text.find(kEncEnd);
  if (end == std::string::npos) return InvalidArgumentError("key file " + path.string() + ": no END line");
  std::string b64;
  for (char c : text.substr(kEncBegin.size(), end - kEncBegin.size())) {
    if (c != '\n' && c != '\r') b64.push_back(c);
  }
  FLT_ASSIGN_OR_RETURN(Bytes blob, internal::Base64Decode(b64));
  if (blob.size() < kHeaderSize + security::kAesGcmNonceSize + security::kAesGcmTagSize ||
      !std::equal(kMagic.begin(), kMagic.end(), blob.begin()) || blob[7] != 0) {
    return InvalidArgumentError("key file " + path.string() + ": not a FLTKEY1 blob");
  }
  uint32_t iterations = 0;
  for (int i = 0; i < 4; ++i) iterations = (iterations << 8) | blob[8 + static_cast<size_t>(i)];
  if (iterations == 0 || iterations > kMaxIterations) {
    return InvalidArgumentError("key file " + path.string() + ": PBKDF2 iteration count out of range");
  }
  ByteSpan all(blob);
  ByteSpan header = all.first(kHeaderSize);
  ByteSpan salt = all.subspan(12, kSaltSize);
  ByteSpan nonce = all.subspan(kHeaderSize, security::kAesGcmNonceSize);
  ByteSpan sealed = all.subspan(kHeaderSize + security::kAesGcmNonceSize);
  FLT_ASSIGN_OR_RETURN(Bytes k, DeriveKey(passphrase, salt, iterations));
  auto pem = security::AesGcmOpen(k, nonce, sealed, header);
  internal::Wipe(k);
  if (!pem.ok()) return UnauthenticatedError("key file " + path.string() + ": wrong passphrase or corrupted file");
  auto key = security::EcdsaPrivateKey::FromPem(AsStringView(*pem));
  internal::Wipe(*pem);
  return key;
}

Result<v1::RoleType> ParseRoleName(std::string_view name) {
  for (v1::RoleType r : kAllRoles) {
    if (RoleName(r) == name) return r;
  }
  return InvalidArgumentError("unknown role '" + std::string(name) + "' (root|targets|snapshot|timestamp|director)");
}

Result<RepositoryKeys> InitKeyDirectory(const fs::path& dir, const KeyInitOptions& options) {
  if (options.root_keys == 0 || options.root_threshold == 0 || options.root_threshold > options.root_keys) {
    return InvalidArgumentError("keys init: root threshold must be in [1, root keys]");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("keys init: cannot create " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  for (v1::RoleType r : kAllRoles) {
    if (!RoleFiles(dir, r).empty()) return AlreadyExistsError("keys init: " + dir.string() + " already holds keys");
  }
  for (v1::RoleType r : kAllRoles) {
    const uint32_t n = r == v1::ROLE_TYPE_ROOT ? options.root_keys : 1;
    for (uint32_t i = 1; i <= n; ++i) {
      FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::Generate());
      FLT_RETURN_IF_ERROR(WriteKeyFile(dir / (std::string(RoleName(r)) + "-" + std::to_string(i) + ".pem"), key,
                                       options.passphrase, options.pbkdf2_iterations));
    }
  }
  FLT_ASSIGN_OR_RETURN(RepositoryKeys keys, LoadKeyDirectory(dir, options.passphrase));
  keys.thresholds[v1::ROLE_TYPE_ROOT] = options.root_threshold;
  return keys;
}

Result<RepositoryKeys> LoadKeyDirectory(const fs::path& dir, std::string_view passphrase) {
  RepositoryKeys out;
  for (v1::RoleType r : kAllRoles) {
    auto files = RoleFiles(dir, r);
    if (files.empty()) return NotFoundError("key directory " + dir.string() + " has no " + std::string(RoleName(r)) + " key");
    for (const auto& [n, path] : files) {
      FLT_ASSIGN_OR_RETURN(auto key, ReadKeyFile(path, passphrase));
      out.keys[r].push_back(std::make_shared<const security::EcdsaPrivateKey>(std::move(key)));
    }
    out.thresholds[r] = r == v1::ROLE_TYPE_ROOT ? std::min<uint32_t>(2, static_cast<uint32_t>(files.size())) : 1;
  }
  return out;
}

Result<std::string> RotateKey(const fs::path& dir, v1::RoleType role, std::string_view passphrase,
                              uint32_t pbkdf2_iterations) {
  auto files = RoleFiles(dir, role);
  if (files.empty()) return NotFoundError("keys rotate: no " + std::string(RoleName(role)) + " key in " + dir.string());
  // Prove the passphrase before changing anything.
  FLT_RETURN_IF_ERROR(ReadKeyFile(files.front().second, passphrase).status());
  FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::Generate());
  const int next = files.back().first + 1;
  FLT_RETURN_IF_ERROR(WriteKeyFile(dir / (std::string(RoleName(role)) + "-" + std::to_string(next) + ".pem"), key,
                                   passphrase, pbkdf2_iterations));
  std::error_code ec;
  fs::create_directories(dir / "retired", ec);
  fs::rename(files.front().second, dir / "retired" / files.front().second.filename(), ec);
  if (ec) return UnavailableError("keys rotate: cannot retire " + files.front().second.string() + ": " + ec.message());
  return key.public_key().KeyId();
}

}  // namespace flotilla::ota
