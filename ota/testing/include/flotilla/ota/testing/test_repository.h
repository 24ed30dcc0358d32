// A real signed repository in a temp dir for tests: in-memory role keys (no files), a
// FakeClock, and a device trusted state provisioned with root v1.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota::testing {

inline std::shared_ptr<const security::EcdsaPrivateKey> NewKey() {
  auto k = security::EcdsaPrivateKey::Generate();
  FLT_CHECK_OK(k.status());
  return std::make_shared<const security::EcdsaPrivateKey>(std::move(k).value());
}

// Fresh keys for every role: `root_keys` root keys with `root_threshold`.
inline RepositoryKeys MakeKeys(int root_keys = 3, uint32_t root_threshold = 2) {
  RepositoryKeys keys;
  for (v1::RoleType r : kAllRoles) {
    const int n = r == v1::ROLE_TYPE_ROOT ? root_keys : 1;
    for (int i = 0; i < n; ++i) keys.keys[r].push_back(NewKey());
    keys.thresholds[r] = r == v1::ROLE_TYPE_ROOT ? root_threshold : 1;
  }
  return keys;
}

// The director's view of a published target (agrees with targets by construction).
inline v1::AssignedTarget AssignedFrom(const v1::TargetInfo& t) {
  v1::AssignedTarget at;
  at.set_name(t.name());
  at.set_sha256(t.sha256());
  at.set_length(t.length());
  at.set_release_counter(t.release_counter());
  return at;
}

class TestRepository {
 public:
  explicit TestRepository(RepositoryKeys keys = MakeKeys())
      : dir_(Must(TempDir::Create("flotilla-ota-repo"))), keys_(keys) {
    repo_ = Must(Repository::Open(dir_.path() / "repo", keys, clock_));
    FLT_CHECK_OK(repo_->InitRoot());
  }

  Repository& repo() { return *repo_; }
  ::flotilla::testing::FakeClock& clock() { return clock_; }
  const RepositoryKeys& keys() const { return keys_; }
  std::filesystem::path dir() const { return repo_->dir(); }
  const std::filesystem::path& scratch() const { return dir_.path(); }

  // Device trust anchor: the current root, nothing else.
  v1::OtaTrustedState ProvisionedState() const {
    v1::OtaTrustedState s;
    Bytes root = Must(repo_->CurrentRoot());
    s.set_root(std::string(AsStringView(root)));
    return s;
  }

  // Writes `content` to a scratch file and registers it.
  v1::TargetInfo AddTarget(const std::string& name, const Bytes& content, uint64_t release_counter,
                           std::vector<uint64_t> boundaries = {}, uint64_t max_chunk = 4096,
                           v1::TargetKind kind = v1::TARGET_KIND_BASE_MODEL, Bytes base_sha = {}) {
    const auto file = dir_.path() / ("src-" + std::to_string(counter_++));
    FLT_CHECK_OK(WriteFileAtomic(file, content));
    TargetSpec spec;
    spec.file = file;
    spec.name = name;
    spec.kind = kind;
    spec.release_counter = release_counter;
    spec.hardware_compat = {"test-soc"};
    spec.base_model_sha256 = std::move(base_sha);
    spec.chunk_boundaries = std::move(boundaries);
    spec.max_chunk_bytes = max_chunk;
    return Must(repo_->AddTarget(spec));
  }

  // Director assignment of `targets` (by name, as published) for `device_id`.
  Bytes AssignDevice(const std::string& device_id, const std::vector<std::string>& names,
                     const std::string& deployment = "dep-1") {
    v1::DirectorAssignment a;
    a.set_device_id(device_id);
    a.set_deployment_id(deployment);
    a.set_nonce("nonce-" + deployment);
    for (const auto& n : names) *a.add_targets() = AssignedFrom(repo_->targets().at(n));
    return Must(repo_->Assign(a));
  }

  template <typename T>
  static T Must(Result<T> r) {
    FLT_CHECK_OK(r.status());
    return std::move(r).value();
  }

 private:
  TempDir dir_;
  ::flotilla::testing::FakeClock clock_;
  RepositoryKeys keys_;
  std::unique_ptr<Repository> repo_;
  int counter_ = 0;
};

}  // namespace flotilla::ota::testing
