// `flotilla keys init|rotate`: OTA role keys (docs/ota.md "Key management").
//   init:   offline root (3, threshold 2) and targets keys, online snapshot, timestamp and
//           director keys, one 0600 PEM file each, optionally passphrase-encrypted.
//   rotate: replaces a role's oldest key; with --repo also signs root N+1 (old and new
//           root thresholds) and re-signs what the rotated role covers.
// The passphrase comes from an environment variable or a file, never from argv.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "command_registry.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/file.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository.h"

namespace flotilla::cli {
namespace {

struct KeysOptions {
  std::string dir;
  std::string passphrase_env;
  std::string passphrase_file;
  uint32_t root_keys = 3;
  uint32_t root_threshold = 2;
  uint32_t iterations = ota::kDefaultPbkdf2Iterations;
  std::string role;
  std::string repo;
};

Result<std::string> Passphrase(const KeysOptions& o) {
  if (!o.passphrase_env.empty()) {
    const char* v = std::getenv(o.passphrase_env.c_str());
    if (v == nullptr || *v == '\0') return InvalidArgumentError("environment variable " + o.passphrase_env + " is empty");
    return std::string(v);
  }
  if (!o.passphrase_file.empty()) {
    FLT_ASSIGN_OR_RETURN(std::string p, ReadFileString(o.passphrase_file, 4096));
    while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
    if (p.empty()) return InvalidArgumentError("passphrase file " + o.passphrase_file + " is empty");
    return p;
  }
  return std::string();
}

void PrintKeys(const ota::RepositoryKeys& keys) {
  for (const auto& [role, list] : keys.keys) {
    for (const auto& k : list) {
      std::printf("  %-9s %s\n", std::string(ota::RoleName(role)).c_str(), k->public_key().KeyId().c_str());
    }
  }
}

Status Init(const KeysOptions& o) {
  ota::KeyInitOptions io;
  FLT_ASSIGN_OR_RETURN(io.passphrase, Passphrase(o));
  io.pbkdf2_iterations = o.iterations;
  io.root_keys = o.root_keys;
  io.root_threshold = o.root_threshold;
  FLT_ASSIGN_OR_RETURN(auto keys, ota::InitKeyDirectory(o.dir, io));
  std::printf("created OTA role keys in %s (%s):\n", o.dir.c_str(),
              io.passphrase.empty() ? "unencrypted" : "AES-256-GCM, PBKDF2-HMAC-SHA256");
  PrintKeys(keys);
  std::printf("keep root-* and targets-* offline; snapshot, timestamp and director sign online\n");
  return Status::Ok();
}

Status Rotate(const KeysOptions& o) {
  FLT_ASSIGN_OR_RETURN(v1::RoleType role, ota::ParseRoleName(o.role));
  FLT_ASSIGN_OR_RETURN(std::string pass, Passphrase(o));
  FLT_ASSIGN_OR_RETURN(auto old_keys, ota::LoadKeyDirectory(o.dir, pass));
  FLT_ASSIGN_OR_RETURN(std::string id, ota::RotateKey(o.dir, role, pass, o.iterations));
  std::printf("new %s key %s (old key moved to %s/retired)\n", o.role.c_str(), id.c_str(), o.dir.c_str());
  if (o.repo.empty()) {
    std::printf("now sign a new root listing it: flotilla keys rotate ... --repo DIR, or your release process\n");
    return Status::Ok();
  }
  FLT_ASSIGN_OR_RETURN(auto new_keys, ota::LoadKeyDirectory(o.dir, pass));
  new_keys.thresholds[v1::ROLE_TYPE_ROOT] = old_keys.Threshold(v1::ROLE_TYPE_ROOT);
  FLT_ASSIGN_OR_RETURN(auto repo, ota::Repository::Open(o.repo, old_keys, RealClock()));
  FLT_RETURN_IF_ERROR(repo->RotateRoot(new_keys));
  std::printf("signed root version %llu\n", static_cast<unsigned long long>(repo->root_version()));
  if (repo->snapshot_version() > 0 && role != v1::ROLE_TYPE_ROOT && role != v1::ROLE_TYPE_DIRECTOR) {
    if (role == v1::ROLE_TYPE_TIMESTAMP) {
      FLT_RETURN_IF_ERROR(repo->RefreshTimestamp(std::chrono::milliseconds(0), true).status());
    } else {
      FLT_RETURN_IF_ERROR(repo->Publish());
    }
    std::printf("re-signed metadata with the new %s key\n", o.role.c_str());
  }
  return Status::Ok();
}

void Run(Status s) {
  if (!s.ok()) {
    std::fprintf(stderr, "flotilla keys: %s\n", s.ToString().c_str());
    ExitCode() = 1;
  }
}

CommandRegistration keys_registration("keys", [](CLI::App& root) {
  auto opts = std::make_shared<KeysOptions>();
  CLI::App* keys = root.add_subcommand("keys", "OTA role keys (root, targets, snapshot, timestamp, director)");
  keys->require_subcommand(1);
  auto add_common = [&](CLI::App* c) {
    c->add_option("--dir", opts->dir, "Key directory")->required();
    c->add_option("--passphrase-env", opts->passphrase_env, "Read the passphrase from this environment variable");
    c->add_option("--passphrase-file", opts->passphrase_file, "Read the passphrase from this file");
    c->add_option("--pbkdf2-iterations", opts->iterations, "PBKDF2-HMAC-SHA256 iterations for encrypted files")
        ->capture_default_str();
  };
  CLI::App* init = keys->add_subcommand("init", "Create a key directory with fresh keys for every role");
  add_common(init);
  init->add_option("--root-keys", opts->root_keys, "Number of root keys")->capture_default_str();
  init->add_option("--root-threshold", opts->root_threshold, "Root signature threshold")->capture_default_str();
  init->callback([opts] { Run(Init(*opts)); });
  CLI::App* rotate = keys->add_subcommand("rotate", "Replace the oldest key of a role");
  add_common(rotate);
  rotate->add_option("role", opts->role, "root|targets|snapshot|timestamp|director")->required();
  rotate->add_option("--repo", opts->repo, "Repository directory: also sign root N+1 and re-sign metadata");
  rotate->callback([opts] { Run(Rotate(*opts)); });
});

}  // namespace
}  // namespace flotilla::cli
