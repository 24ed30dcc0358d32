#include "flotilla/ota/repository.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/security/hash.h"
#include "numbered_name.h"

namespace flotilla::ota {
namespace {

namespace fs = std::filesystem;

Result<v1::Metadata> ReadMetadataFile(const fs::path& path, v1::RoleType role) {
  FLT_ASSIGN_OR_RETURN(Bytes wire, ReadFileBytes(path, MaxMetadataBytes(role)));
  return ParseTrustedMetadata(wire, role);
}

v1::MetaFileInfo MetaInfo(std::string name, uint64_t version, ByteSpan wire) {
  v1::MetaFileInfo info;
  info.set_name(std::move(name));
  info.set_version(version);
  info.set_length(wire.size());
  auto d = security::Sha256(wire);
  info.set_sha256(d.data(), d.size());
  return info;
}

}  // namespace

std::chrono::milliseconds RoleExpiry::For(v1::RoleType role) const {
  switch (role) {
    case v1::ROLE_TYPE_ROOT: return root;
    case v1::ROLE_TYPE_TARGETS: return targets;
    case v1::ROLE_TYPE_SNAPSHOT: return snapshot;
    case v1::ROLE_TYPE_TIMESTAMP: return timestamp;
    default: return director;
  }
}

std::vector<std::pair<uint64_t, uint64_t>> ComputeChunks(uint64_t size, std::vector<uint64_t> boundaries,
                                                          uint64_t max_chunk) {
  if (max_chunk == 0) max_chunk = uint64_t{4} << 20;
  boundaries.push_back(0);
  boundaries.push_back(size);
  std::sort(boundaries.begin(), boundaries.end());
  boundaries.erase(std::unique(boundaries.begin(), boundaries.end()), boundaries.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (size_t i = 0; i + 1 < boundaries.size() && boundaries[i] < size; ++i) {
    const uint64_t end = std::min(boundaries[i + 1], size);
    for (uint64_t off = boundaries[i]; off < end; off += max_chunk) out.emplace_back(off, std::min(max_chunk, end - off));
  }
  return out;
}

Result<std::unique_ptr<Repository>> Repository::Open(const fs::path& dir, RepositoryKeys keys, const Clock& clock,
                                                     RoleExpiry expiry) {
  for (v1::RoleType r : kAllRoles) {
    if (keys.Signers(r).size() < keys.Threshold(r)) {
      return InvalidArgumentError("repository: fewer " + std::string(RoleName(r)) + " keys than its threshold");
    }
  }
  std::unique_ptr<Repository> repo(new Repository(dir, std::move(keys), clock, expiry));
  std::error_code ec;
  for (const char* sub : {"metadata/root", "metadata/snapshot", "metadata/targets", "metadata/director/device",
                          "metadata/director/cohort", "artifacts"}) {
    fs::create_directories(dir / sub, ec);
    if (ec) return UnavailableError("repository: cannot create " + (dir / sub).string() + ": " + ec.message());
  }
  FLT_RETURN_IF_ERROR(repo->Load());
  return repo;
}

Status Repository::Load() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_ / "metadata/root", ec)) {
    auto n = internal::ParseNumberedName(e.path().filename().string(), "", ".root.pb");
    if (n) root_version_ = std::max(root_version_, *n);
  }
  if (!fs::exists(dir_ / TimestampMetadataPath())) return Status::Ok();
  FLT_ASSIGN_OR_RETURN(v1::Metadata ts, ReadMetadataFile(dir_ / TimestampMetadataPath(), v1::ROLE_TYPE_TIMESTAMP));
  timestamp_version_ = ts.version();
  timestamp_expires_ms_ = ts.expires_ms();
  snapshot_version_ = ts.timestamp().snapshot().version();
  FLT_ASSIGN_OR_RETURN(snapshot_wire_,
                       ReadFileBytes(dir_ / SnapshotMetadataPath(snapshot_version_), MaxMetadataBytes(v1::ROLE_TYPE_SNAPSHOT)));
  FLT_ASSIGN_OR_RETURN(v1::Metadata snap, ParseTrustedMetadata(snapshot_wire_, v1::ROLE_TYPE_SNAPSHOT));
  for (const auto& m : snap.snapshot().meta()) {
    if (m.name() == "targets") targets_version_ = m.version();
  }
  FLT_ASSIGN_OR_RETURN(v1::Metadata tg, ReadMetadataFile(dir_ / TargetsMetadataPath(targets_version_), v1::ROLE_TYPE_TARGETS));
  for (const auto& t : tg.targets().targets()) {
    targets_[t.name()] = t;
    published_counters_[t.name()] = t.release_counter();
  }
  return Status::Ok();
}

v1::Metadata Repository::NewMetadata(v1::RoleType role, uint64_t version) const {
  v1::Metadata m;
  m.set_spec_version(kSpecVersion);
  m.set_role(role);
  m.set_version(version);
  m.set_expires_ms(clock_.NowUnixMillis() + expiry_.For(role).count());
  return m;
}

v1::RootMetadata Repository::RootBody(const RepositoryKeys& keys) const {
  v1::RootMetadata root;
  for (v1::RoleType r : kAllRoles) {
    v1::RoleKeys* rk = root.add_roles();
    rk->set_role(r);
    rk->set_threshold(keys.Threshold(r));
    for (const auto* k : keys.Signers(r)) {
      const std::string id = k->public_key().KeyId();
      rk->add_key_ids(id);
      bool listed = false;
      for (const auto& pk : root.keys()) listed = listed || pk.key_id() == id;
      if (!listed) *root.add_keys() = ToPublicKeyProto(k->public_key());
    }
  }
  return root;
}

Status Repository::WriteSigned(const std::string& rel, v1::Metadata m,
                               const std::vector<const security::EcdsaPrivateKey*>& keys, Bytes* out) {
  FLT_ASSIGN_OR_RETURN(Bytes wire, SignMetadata(m, keys));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(dir_ / rel, wire));
  if (out != nullptr) *out = std::move(wire);
  return Status::Ok();
}

Status Repository::InitRoot() {
  if (root_version_ != 0) return AlreadyExistsError("repository: root already initialised");
  v1::Metadata m = NewMetadata(v1::ROLE_TYPE_ROOT, 1);
  *m.mutable_root() = RootBody(keys_);
  FLT_RETURN_IF_ERROR(ValidateRoot(m.root()));
  FLT_RETURN_IF_ERROR(WriteSigned(RootMetadataPath(1), m, keys_.Signers(v1::ROLE_TYPE_ROOT), nullptr));
  root_version_ = 1;
  return Status::Ok();
}

Status Repository::RotateRoot(RepositoryKeys new_keys) {
  if (root_version_ == 0) return FailedPreconditionError("repository: no root to rotate");
  v1::Metadata m = NewMetadata(v1::ROLE_TYPE_ROOT, root_version_ + 1);
  *m.mutable_root() = RootBody(new_keys);
  FLT_RETURN_IF_ERROR(ValidateRoot(m.root()));
  std::vector<const security::EcdsaPrivateKey*> signers = keys_.Signers(v1::ROLE_TYPE_ROOT);
  for (const auto* k : new_keys.Signers(v1::ROLE_TYPE_ROOT)) signers.push_back(k);
  FLT_RETURN_IF_ERROR(WriteSigned(RootMetadataPath(root_version_ + 1), m, signers, nullptr));
  ++root_version_;
  keys_ = std::move(new_keys);
  return Status::Ok();
}

Result<Bytes> Repository::CurrentRoot() const {
  if (root_version_ == 0) return FailedPreconditionError("repository: no root");
  return ReadFileBytes(dir_ / RootMetadataPath(root_version_), MaxMetadataBytes(v1::ROLE_TYPE_ROOT));
}

Result<v1::TargetInfo> Repository::AddTarget(const TargetSpec& spec) {
  if (spec.name.empty() || spec.name.size() > 256) return InvalidArgumentError("target: empty or overlong name");
  if (spec.kind == v1::TARGET_KIND_UNSPECIFIED) return InvalidArgumentError("target " + spec.name + ": no kind");
  if (spec.kind == v1::TARGET_KIND_ADAPTER && spec.base_model_sha256.size() != security::kSha256Size) {
    return InvalidArgumentError("target " + spec.name + ": an adapter needs its base model's SHA-256");
  }
  if (spec.max_chunk_bytes == 0 || spec.max_chunk_bytes > kMaxChunkBytes) {
    return InvalidArgumentError("target " + spec.name + ": chunk size must be in (0, 4 MiB]");
  }
  auto it = published_counters_.find(spec.name);
  if (it != published_counters_.end() && spec.release_counter < it->second) {
    return InvalidArgumentError("target " + spec.name + ": release counter " + std::to_string(spec.release_counter) +
                                " is lower than the published " + std::to_string(it->second));
  }
  std::error_code ec;
  const uint64_t size = fs::file_size(spec.file, ec);
  if (ec) return NotFoundError("target " + spec.name + ": cannot stat " + spec.file.string() + ": " + ec.message());
  for (uint64_t b : spec.chunk_boundaries) {
    if (b > size) return InvalidArgumentError("target " + spec.name + ": chunk boundary beyond the file end");
  }
  v1::TargetInfo t;
  t.set_name(spec.name);
  t.set_length(size);
  t.set_release_counter(spec.release_counter);
  for (const auto& hw : spec.hardware_compat) t.add_hardware_compat(hw);
  t.set_kind(spec.kind);
  t.set_base_model_sha256(std::string(AsStringView(spec.base_model_sha256)));
  t.set_chunk_size(static_cast<uint32_t>(spec.max_chunk_bytes));
  t.set_custom(spec.custom);
  // One streaming pass: per-chunk and whole-file SHA-256, never the whole file in RAM.
  std::ifstream in(spec.file, std::ios::binary);
  if (!in) return NotFoundError("target " + spec.name + ": cannot open " + spec.file.string());
  security::Sha256Hasher whole;
  Bytes buf;
  for (const auto& [off, len] : ComputeChunks(size, spec.chunk_boundaries, spec.max_chunk_bytes)) {
    buf.resize(len);
    if (!in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(len))) {
      return DataLossError("target " + spec.name + ": short read at offset " + std::to_string(off));
    }
    whole.Update(buf);
    auto d = security::Sha256(buf);
    v1::Chunk* c = t.add_chunks();
    c->set_offset(off);
    c->set_length(len);
    c->set_sha256(d.data(), d.size());
  }
  auto digest = whole.Finish();
  t.set_sha256(digest.data(), digest.size());
  const fs::path dest = dir_ / ArtifactPath(digest);
  if (!fs::exists(dest)) {
    const fs::path tmp = dest.string() + ".tmp";
    fs::copy_file(spec.file, tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(tmp, dest, ec);
    if (ec) return UnavailableError("target " + spec.name + ": cannot store artifact: " + ec.message());
  }
  targets_[spec.name] = t;
  return t;
}

Status Repository::RemoveTarget(const std::string& name) {
  if (targets_.erase(name) == 0) return NotFoundError("target " + name + " is not registered");
  return Status::Ok();
}

Status Repository::Publish() {
  if (root_version_ == 0) return FailedPreconditionError("repository: InitRoot() first");
  v1::Metadata tm = NewMetadata(v1::ROLE_TYPE_TARGETS, targets_version_ + 1);
  for (const auto& [name, t] : targets_) *tm.mutable_targets()->add_targets() = t;
  Bytes targets_wire;
  FLT_RETURN_IF_ERROR(WriteSigned(TargetsMetadataPath(targets_version_ + 1), tm, keys_.Signers(v1::ROLE_TYPE_TARGETS),
                                  &targets_wire));
  ++targets_version_;
  for (const auto& [name, t] : targets_) published_counters_[name] = t.release_counter();

  v1::Metadata sm = NewMetadata(v1::ROLE_TYPE_SNAPSHOT, snapshot_version_ + 1);
  *sm.mutable_snapshot()->add_meta() = MetaInfo("targets", targets_version_, targets_wire);
  FLT_RETURN_IF_ERROR(WriteSigned(SnapshotMetadataPath(snapshot_version_ + 1), sm,
                                  keys_.Signers(v1::ROLE_TYPE_SNAPSHOT), &snapshot_wire_));
  ++snapshot_version_;
  return SignTimestamp();
}

Status Repository::SignTimestamp() {
  v1::Metadata m = NewMetadata(v1::ROLE_TYPE_TIMESTAMP, timestamp_version_ + 1);
  *m.mutable_timestamp()->mutable_snapshot() = MetaInfo("snapshot", snapshot_version_, snapshot_wire_);
  const int64_t expires = m.expires_ms();
  FLT_RETURN_IF_ERROR(WriteSigned(TimestampMetadataPath(), m, keys_.Signers(v1::ROLE_TYPE_TIMESTAMP), nullptr));
  ++timestamp_version_;
  timestamp_expires_ms_ = expires;
  return Status::Ok();
}

Result<bool> Repository::RefreshTimestamp(std::chrono::milliseconds margin, bool force) {
  if (snapshot_version_ == 0) return FailedPreconditionError("repository: nothing published yet");
  if (!force && clock_.NowUnixMillis() + margin.count() < timestamp_expires_ms_) return false;
  FLT_RETURN_IF_ERROR(SignTimestamp());
  return true;
}

Result<Bytes> Repository::Assign(const v1::DirectorAssignment& assignment) {
  std::string rel;
  if (assignment.subject_case() == v1::DirectorAssignment::kDeviceId) {
    rel = DeviceDirectorPath(assignment.device_id());
  } else if (assignment.subject_case() == v1::DirectorAssignment::kCohort) {
    rel = CohortDirectorPath(assignment.cohort());
  } else {
    return InvalidArgumentError("director assignment: no device or cohort");
  }
  const std::string& id = rel;
  if (id.find("..") != std::string::npos) return InvalidArgumentError("director assignment: unsafe subject name");
  uint64_t version = 1;
  if (fs::exists(dir_ / rel)) {
    auto prev = ReadMetadataFile(dir_ / rel, v1::ROLE_TYPE_DIRECTOR);
    if (prev.ok()) version = prev->version() + 1;
  }
  v1::Metadata m = NewMetadata(v1::ROLE_TYPE_DIRECTOR, version);
  *m.mutable_director() = assignment;
  Bytes wire;
  FLT_RETURN_IF_ERROR(WriteSigned(rel, m, keys_.Signers(v1::ROLE_TYPE_DIRECTOR), &wire));
  return wire;
}

}  // namespace flotilla::ota
