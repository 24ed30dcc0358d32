#include "flotilla/ota/client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <thread>

#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/update_check.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/security/hash.h"

namespace flotilla::ota {
namespace {

namespace fs = std::filesystem;
using S = OtaState;
using E = OtaEvent;

struct Transition {
  OtaState from;
  OtaEvent event;
  OtaState to;
};

// The whole state machine, top to bottom.
constexpr Transition kTransitions[] = {
    {S::kIdle, E::kStart, S::kCheck},
    {S::kCheck, E::kNoUpdate, S::kIdle},
    {S::kCheck, E::kAbort, S::kIdle},
    {S::kCheck, E::kUpdateFound, S::kDownload},
    {S::kCheck, E::kFail, S::kReport},
    {S::kDownload, E::kDownloaded, S::kVerify},
    {S::kDownload, E::kFail, S::kReport},
    {S::kVerify, E::kVerified, S::kStage},
    {S::kVerify, E::kRetryDownload, S::kDownload},
    {S::kVerify, E::kFail, S::kReport},
    {S::kStage, E::kStaged, S::kSwitch},
    {S::kStage, E::kRetryDownload, S::kDownload},
    {S::kStage, E::kFail, S::kReport},
    {S::kSwitch, E::kSwitched, S::kHealth},
    {S::kHealth, E::kRetryHealth, S::kHealth},
    {S::kHealth, E::kHealthy, S::kCommit},
    {S::kHealth, E::kUnhealthy, S::kRollback},
    {S::kCommit, E::kCommitted, S::kReport},
    {S::kRollback, E::kRolledBack, S::kReport},
    {S::kReport, E::kReportDone, S::kIdle},
};

constexpr std::string_view kSlotA = "A";
constexpr std::string_view kSlotB = "B";
constexpr size_t kIoBuffer = 1 << 20;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Status Errno(const std::string& what) { return UnavailableError(what + ": " + std::strerror(errno)); }

Status PreadAll(int fd, uint8_t* buf, size_t n, uint64_t off) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return DataLossError("short read at offset " + std::to_string(off));
    buf += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

Status PwriteAll(int fd, const uint8_t* buf, size_t n, uint64_t off) {
  while (n > 0) {
    const ssize_t r = ::pwrite(fd, buf, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("write");
    buf += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

// Streams a file's SHA-256 and size.
Result<std::pair<security::Sha256Digest, uint64_t>> HashFile(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Errno("open " + path.string());
  security::Sha256Hasher h;
  Bytes buf(kIoBuffer);
  uint64_t total = 0;
  for (;;) {
    const ssize_t r = ::read(fd.get(), buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("read " + path.string());
    if (r == 0) break;
    h.Update(ByteSpan(buf.data(), static_cast<size_t>(r)));
    total += static_cast<uint64_t>(r);
  }
  return std::make_pair(h.Finish(), total);
}

bool DigestEquals(const security::Sha256Digest& d, const std::string& expect) {
  return ConstantTimeEqual(d, AsBytes(expect));
}

}  // namespace

std::string_view ToString(OtaState state) {
  switch (state) {
    case S::kIdle: return "IDLE";
    case S::kCheck: return "CHECK";
    case S::kDownload: return "DOWNLOAD";
    case S::kVerify: return "VERIFY";
    case S::kStage: return "STAGE";
    case S::kSwitch: return "SWITCH";
    case S::kHealth: return "HEALTH";
    case S::kCommit: return "COMMIT";
    case S::kRollback: return "ROLLBACK";
    case S::kReport: return "REPORT";
  }
  return "?";
}

std::string_view ToString(OtaEvent event) {
  switch (event) {
    case E::kStart: return "start";
    case E::kNoUpdate: return "no_update";
    case E::kAbort: return "abort";
    case E::kUpdateFound: return "update_found";
    case E::kFail: return "fail";
    case E::kDownloaded: return "downloaded";
    case E::kRetryDownload: return "retry_download";
    case E::kVerified: return "verified";
    case E::kStaged: return "staged";
    case E::kSwitched: return "switched";
    case E::kRetryHealth: return "retry_health";
    case E::kHealthy: return "healthy";
    case E::kUnhealthy: return "unhealthy";
    case E::kCommitted: return "committed";
    case E::kRolledBack: return "rolled_back";
    case E::kReportDone: return "report_done";
  }
  return "?";
}

v1::OtaState ToProto(OtaState state) {
  switch (state) {
    case S::kIdle: return v1::OTA_STATE_IDLE;
    case S::kCheck: return v1::OTA_STATE_CHECK;
    case S::kDownload: return v1::OTA_STATE_DOWNLOAD;
    case S::kVerify: return v1::OTA_STATE_VERIFY;
    case S::kStage: return v1::OTA_STATE_STAGE;
    case S::kSwitch: return v1::OTA_STATE_SWITCH;
    case S::kHealth: return v1::OTA_STATE_HEALTH;
    case S::kCommit: return v1::OTA_STATE_COMMIT;
    case S::kRollback: return v1::OTA_STATE_ROLLBACK;
    case S::kReport: return v1::OTA_STATE_UNSPECIFIED;  // journal-only; see OtaJournalRecord.state
  }
  return v1::OTA_STATE_UNSPECIFIED;
}

OtaState FromProto(v1::OtaState state) {
  switch (state) {
    case v1::OTA_STATE_CHECK: return S::kCheck;
    case v1::OTA_STATE_DOWNLOAD: return S::kDownload;
    case v1::OTA_STATE_VERIFY: return S::kVerify;
    case v1::OTA_STATE_STAGE: return S::kStage;
    case v1::OTA_STATE_SWITCH: return S::kSwitch;
    case v1::OTA_STATE_HEALTH: return S::kHealth;
    case v1::OTA_STATE_COMMIT: return S::kCommit;
    case v1::OTA_STATE_ROLLBACK: return S::kRollback;
    default: return S::kIdle;
  }
}

std::optional<OtaState> NextState(OtaState state, OtaEvent event) {
  for (const auto& t : kTransitions) {
    if (t.from == state && t.event == event) return t.to;
  }
  return std::nullopt;
}

struct OtaClient::Impl {
  OtaClientOptions options;
  OtaClientDeps deps;
  std::unique_ptr<Journal> journal;
  v1::OtaJournalRecord rec;
  OtaState state = S::kIdle;
  bool replaying = false;  // the current step was loaded from the journal (crash recovery)
  CycleResult result;

  // --- paths -------------------------------------------------------------------------
  fs::path SlotDir(std::string_view slot) const { return options.install_dir / std::string(slot); }
  fs::path CurrentLink() const { return options.install_dir / "current"; }
  fs::path PartPath() const {
    return options.data_dir / "staging" / (ToHex(AsBytes(rec.target().sha256())) + ".part");
  }
  void Point(std::string_view p) const {
    if (deps.crash_hook) deps.crash_hook(p);
  }

  Status FsyncFd(int fd, std::string_view what) const {
    Point("fsync:" + std::string(what) + ":before");
    if (::fsync(fd) != 0) return Errno("fsync " + std::string(what));
    Point("fsync:" + std::string(what) + ":after");
    return Status::Ok();
  }
  Status FsyncDir(const fs::path& dir, std::string_view what) const {
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return Errno("open dir " + dir.string());
    return FsyncFd(fd.get(), what);
  }

  std::string CurrentSlot() const {
    std::error_code ec;
    const fs::path target = fs::read_symlink(CurrentLink(), ec);
    if (ec) return "";
    const std::string s = target.filename().string();
    return s == kSlotA || s == kSlotB ? s : "";
  }

  Result<std::optional<v1::TargetInfo>> SlotTarget(std::string_view slot) const {
    const fs::path p = SlotDir(slot) / "target.pb";
    std::error_code ec;
    if (!fs::exists(p, ec)) return std::optional<v1::TargetInfo>();
    FLT_ASSIGN_OR_RETURN(Bytes b, ReadFileBytes(p, MaxMetadataBytes(v1::ROLE_TYPE_TARGETS)));
    v1::TargetInfo t;
    if (!t.ParseFromArray(b.data(), static_cast<int>(b.size()))) {
      return DataLossError("slot " + std::string(slot) + ": target.pb does not parse");
    }
    return std::optional<v1::TargetInfo>(std::move(t));
  }

  Status Save(std::string_view step) { return journal->Save(rec, step); }

  // --- the cycle ------------------------------------------------------------------------
  Result<CycleResult> Run();
  Status Enter(OtaEvent event);
  OtaEvent Fail(const Status& why);
  Result<OtaEvent> Step();
  Result<OtaEvent> DoCheck();
  Result<OtaEvent> DoDownload();
  Result<OtaEvent> DoVerify();
  Result<OtaEvent> DoStage();
  Result<OtaEvent> DoSwitch();
  Result<OtaEvent> DoHealth();
  Result<OtaEvent> DoRollback();
  Result<OtaEvent> DoCommit();
  Status EnsureCurrent(const std::string& slot);
  Result<OtaEvent> DoReport();
  Status SendPendingReport();
  Result<uint64_t> VerifiedPrefix(int fd);
  Status FetchRun(int fd, size_t first, size_t end, bool* restarted);
  std::chrono::milliseconds Backoff(uint32_t failures);
};

OtaEvent OtaClient::Impl::Fail(const Status& why) {
  rec.set_error(why.ToString());
  rec.set_failed_state(ToProto(state));
  rec.set_outcome(v1::OTA_OUTCOME_FAILURE);
  FLT_LOG(kWarn, "ota") << "update of " << options.target_name << " failed in " << ToString(state) << ": "
                        << why.ToString();
  return E::kFail;
}

Status OtaClient::Impl::Enter(OtaEvent event) {
  std::optional<OtaState> next = NextState(state, event);
  FLT_CHECK_MSG(next.has_value(), "OtaClient: event not allowed in this state");
  FLT_LOG(kDebug, "ota") << ToString(state) << " --" << ToString(event) << "--> " << ToString(*next);
  state = *next;
  rec.set_state(state == S::kReport ? v1::OTA_STATE_UNSPECIFIED : ToProto(state));
  // REPORT has no wire state: remember it by a pending report or by the outcome field.
  replaying = false;
  return Save(std::string(ToString(state)) + ":" + std::string(ToString(event)));
}

Result<CycleResult> OtaClient::Impl::Run() {
  FLT_ASSIGN_OR_RETURN(rec, journal->Load());
  result = CycleResult{};
  // A record with an outcome but no state is a cycle that reached REPORT.
  state = rec.state() == v1::OTA_STATE_UNSPECIFIED && rec.outcome() != v1::OTA_OUTCOME_UNSPECIFIED &&
                  rec.outcome() != v1::OTA_OUTCOME_IN_PROGRESS
              ? S::kReport
              : FromProto(rec.state());
  replaying = state != S::kIdle;
  if (replaying) {
    FLT_LOG(kInfo, "ota") << "resuming journaled update in " << ToString(state);
  }
  if (state == S::kIdle) {
    if (!rec.pending_report().empty()) FLT_RETURN_IF_ERROR(SendPendingReport());
    // A new cycle: keep only what outlives cycles.
    v1::OtaJournalRecord fresh;
    fresh.set_pending_report(rec.pending_report());
    fresh.set_report_attempts(rec.report_attempts());
    fresh.set_last_rolled_back_sha256(rec.last_rolled_back_sha256());
    fresh.set_cycle_time_ms(deps.clock->NowUnixMillis());
    fresh.set_outcome(v1::OTA_OUTCOME_IN_PROGRESS);
    rec = std::move(fresh);
    FLT_RETURN_IF_ERROR(Enter(E::kStart));
  }
  while (state != S::kIdle) {
    FLT_ASSIGN_OR_RETURN(OtaEvent ev, Step());
    if (ev == E::kNoUpdate || ev == E::kAbort) rec.set_outcome(v1::OTA_OUTCOME_UNSPECIFIED);
    FLT_RETURN_IF_ERROR(Enter(ev));
  }
  result.outcome = rec.outcome() == v1::OTA_OUTCOME_IN_PROGRESS ? v1::OTA_OUTCOME_UNSPECIFIED : rec.outcome();
  if (result.error.empty()) result.error = rec.error();
  result.bytes_downloaded = rec.bytes_downloaded();
  return result;
}

Result<OtaEvent> OtaClient::Impl::Step() {
  switch (state) {
    case S::kCheck: return DoCheck();
    case S::kDownload: return DoDownload();
    case S::kVerify: return DoVerify();
    case S::kStage: return DoStage();
    case S::kSwitch: return DoSwitch();
    case S::kHealth: return DoHealth();
    case S::kCommit: return DoCommit();
    case S::kRollback: return DoRollback();
    case S::kReport: return DoReport();
    case S::kIdle: break;
  }
  return InternalError("OtaClient: no action for IDLE");
}

// --- CHECK ----------------------------------------------------------------------------------

Result<OtaEvent> OtaClient::Impl::DoCheck() {
  v1::OtaTrustedState trusted;
  auto loaded = journal->LoadTrusted();
  if (loaded.ok()) {
    trusted = std::move(loaded).value();
  } else if (loaded.status().code() == StatusCode::kNotFound) {
    trusted.set_root(std::string(AsStringView(options.provisioned_root)));
  } else {
    return loaded.status();
  }
  FLT_ASSIGN_OR_RETURN(UpdateVerifier verifier, UpdateVerifier::Create(std::move(trusted)));
  auto checked = RunUpdateCheck(verifier, *deps.fetcher, options.device, rec.cycle_time_ms());
  // Whatever verified is kept, even when a later step failed: each step is consistent.
  FLT_RETURN_IF_ERROR(journal->SaveTrusted(verifier.state()));
  if (!checked.ok()) {
    result.error = checked.status().ToString();
    FLT_LOG(kWarn, "ota") << "update check refused: " << result.error;
    return E::kAbort;
  }
  if (!checked->has_value()) return E::kNoUpdate;
  const VerifiedAssignment& a = **checked;
  const v1::TargetInfo* target = nullptr;
  for (const auto& t : a.targets) {
    if (t.name() == options.target_name) target = &t;
  }
  if (target == nullptr) return E::kNoUpdate;
  FLT_ASSIGN_OR_RETURN(auto installed, SlotTarget(CurrentSlot()));
  if (installed && installed->sha256() == target->sha256()) return E::kNoUpdate;
  if (!rec.last_rolled_back_sha256().empty() && rec.last_rolled_back_sha256() == target->sha256()) {
    result.error = "target " + target->name() + " was rolled back before; not retried automatically";
    return E::kNoUpdate;
  }
  *rec.mutable_target() = *target;
  rec.set_deployment_id(a.deployment_id);
  rec.set_nonce(a.nonce);
  if (target->kind() == v1::TARGET_KIND_ADAPTER) {
    const Bytes base = options.installed_base_sha256 ? options.installed_base_sha256() : Bytes{};
    if (Status s = CheckBaseCompatibility(*target, base); !s.ok()) return Fail(s);
  }
  return E::kUpdateFound;
}

// --- DOWNLOAD --------------------------------------------------------------------------------

std::chrono::milliseconds OtaClient::Impl::Backoff(uint32_t failures) {
  // Exponential with "equal jitter": half fixed, half uniform, so a fleet spreads out.
  uint64_t ms = static_cast<uint64_t>(options.backoff_initial.count());
  for (uint32_t i = 1; i < failures && ms < static_cast<uint64_t>(options.backoff_max.count()); ++i) ms *= 2;
  ms = std::min<uint64_t>(ms, static_cast<uint64_t>(options.backoff_max.count()));
  const uint64_t half = ms / 2;
  return std::chrono::milliseconds(half + (half > 0 ? deps.random->Uniform(half + 1) : 0));
}

// Chunks [0, k) of the .part that still hash right (after a crash the journal may claim
// more than the disk holds).
Result<uint64_t> OtaClient::Impl::VerifiedPrefix(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Errno("stat .part");
  const auto& chunks = rec.target().chunks();
  Bytes buf;
  uint64_t k = 0;
  for (; k < rec.next_chunk() && k < static_cast<uint64_t>(chunks.size()); ++k) {
    const v1::Chunk& c = chunks[static_cast<int>(k)];
    if (c.offset() + c.length() > static_cast<uint64_t>(st.st_size)) break;
    buf.resize(c.length());
    if (!PreadAll(fd, buf.data(), buf.size(), c.offset()).ok()) break;
    if (!DigestEquals(security::Sha256(buf), c.sha256())) break;
  }
  return k;
}

// Fetches chunks [first, end) with one Range request, verifying each chunk as its last
// byte arrives; progress is fsynced and journaled per chunk. A 200 (Range ignored or ETag
// changed) restarts from chunk 0 when the policy allows.
Status OtaClient::Impl::FetchRun(int fd, size_t first, size_t end, bool* restarted) {
  const auto& chunks = rec.target().chunks();
  const uint64_t length = rec.target().length();
  RangeRequest req;
  req.path = ArtifactPath(AsBytes(rec.target().sha256()));
  req.offset = chunks[static_cast<int>(first)].offset();
  const v1::Chunk& last = chunks[static_cast<int>(end - 1)];
  req.length = last.offset() + last.length() - req.offset;
  req.if_range = rec.etag();
  size_t cur = first;
  size_t stop = end;
  Bytes buf;
  buf.reserve(chunks[static_cast<int>(cur)].length());
  auto on_headers = [&](const RangeResponse& r) -> Status {
    const bool same_tag = rec.etag().empty() || r.etag == rec.etag();
    if (r.http_status == 206 && same_tag) {
      if (rec.etag().empty()) rec.set_etag(r.etag);
      return Status::Ok();
    }
    // A full body: fine from offset 0 of an unchanged file, otherwise a restart.
    if (r.http_status == 200 && req.offset == 0 && same_tag) {
      rec.set_etag(r.etag);
      stop = static_cast<size_t>(chunks.size());
      return Status::Ok();
    }
    if (!options.allow_full_restart) {
      return FailedPreconditionError(std::string(same_tag ? "server ignored Range" : "artifact ETag changed") +
                                     " mid-download and the policy forbids a full restart");
    }
    FLT_LOG(kInfo, "ota") << (same_tag ? "server ignored Range" : "ETag changed") << ": restarting download";
    if (r.http_status != 200) {
      // The server ignored If-Range: start over against the new representation.
      rec.set_etag(r.etag);
      rec.set_next_chunk(0);
      FLT_RETURN_IF_ERROR(Save("DOWNLOAD:restart"));
      return UnavailableError("ETag changed under a 206 response; retrying from zero");
    }
    *restarted = true;
    rec.set_etag(r.etag);
    rec.set_next_chunk(0);
    cur = 0;
    stop = static_cast<size_t>(chunks.size());
    return Save("DOWNLOAD:restart");
  };
  auto on_data = [&](ByteSpan data) -> Status {
    while (!data.empty()) {
      if (cur >= stop) {
        return OutOfRangeError("artifact stream is longer than the " + std::to_string(length) +
                               "-byte target length");
      }
      const v1::Chunk& c = chunks[static_cast<int>(cur)];
      const size_t take = std::min<size_t>(data.size(), c.length() - buf.size());
      buf.insert(buf.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
      data = data.subspan(take);
      rec.set_bytes_downloaded(rec.bytes_downloaded() + take);
      if (buf.size() < c.length()) continue;
      if (!DigestEquals(security::Sha256(buf), c.sha256())) {
        return DataLossError("chunk " + std::to_string(cur) + " at offset " + std::to_string(c.offset()) +
                             " does not match its SHA-256");
      }
      FLT_RETURN_IF_ERROR(PwriteAll(fd, buf.data(), buf.size(), c.offset()));
      FLT_RETURN_IF_ERROR(FsyncFd(fd, "part"));
      rec.set_next_chunk(cur + 1);
      FLT_RETURN_IF_ERROR(Save("DOWNLOAD:chunk"));
      buf.clear();
      ++cur;
    }
    return Status::Ok();
  };
  auto r = deps.fetcher->FetchRange(req, on_headers, on_data);
  FLT_RETURN_IF_ERROR(r.status());
  if (cur < stop) {
    return UnavailableError("artifact stream ended at chunk " + std::to_string(cur) + " of " + std::to_string(stop));
  }
  return Status::Ok();
}

Result<OtaEvent> OtaClient::Impl::DoDownload() {
  const v1::TargetInfo& t = rec.target();
  if (t.chunks_size() == 0 && t.length() > 0) return Fail(InvalidArgumentError("target has no chunk list"));
  std::error_code ec;
  fs::create_directories(PartPath().parent_path(), ec);
  if (ec) return Errno("create staging dir");
  Fd fd(::open(PartPath().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (fd.get() < 0) return Errno("open " + PartPath().string());
  if (rec.next_chunk() == 0) {
    if (::ftruncate(fd.get(), 0) != 0) return Errno("truncate .part");
  } else {
    FLT_ASSIGN_OR_RETURN(uint64_t k, VerifiedPrefix(fd.get()));
    if (k != rec.next_chunk()) {
      FLT_LOG(kInfo, "ota") << "resume: journal said chunk " << rec.next_chunk() << ", disk holds " << k;
      rec.set_next_chunk(k);
      FLT_RETURN_IF_ERROR(Save("DOWNLOAD:resume"));
    }
  }
  // Chunks the device already holds in either slot (same hash), e.g. unchanged tensors.
  std::map<std::string, std::pair<fs::path, uint64_t>> local;
  for (std::string_view slot : {kSlotA, kSlotB}) {
    auto st = SlotTarget(slot);
    if (!st.ok() || !st->has_value()) continue;
    for (const auto& c : (*st)->chunks()) local.emplace(c.sha256(), std::make_pair(SlotDir(slot) / "artifact", c.offset()));
  }
  const size_t n = static_cast<size_t>(t.chunks_size());
  Bytes buf;
  auto try_local = [&](size_t i) -> bool {
    const v1::Chunk& c = t.chunks(static_cast<int>(i));
    auto it = local.find(c.sha256());
    if (it == local.end()) return false;
    Fd src(::open(it->second.first.c_str(), O_RDONLY | O_CLOEXEC));
    buf.resize(c.length());
    if (src.get() < 0 || !PreadAll(src.get(), buf.data(), buf.size(), it->second.second).ok()) return false;
    if (!DigestEquals(security::Sha256(buf), c.sha256())) return false;  // slot corrupted: fetch instead
    return PwriteAll(fd.get(), buf.data(), buf.size(), c.offset()).ok();
  };
  while (rec.next_chunk() < n) {
    const size_t i = static_cast<size_t>(rec.next_chunk());
    if (try_local(i)) {
      FLT_RETURN_IF_ERROR(FsyncFd(fd.get(), "part"));
      rec.set_next_chunk(i + 1);
      FLT_RETURN_IF_ERROR(Save("DOWNLOAD:reuse"));
      continue;
    }
    size_t j = i + 1;
    while (j < n && !local.count(t.chunks(static_cast<int>(j)).sha256())) ++j;
    bool restarted = false;
    Status s = FetchRun(fd.get(), i, j, &restarted);
    if (s.ok()) continue;
    if (!IsRetryable(s)) return Fail(s);
    rec.set_download_failures(rec.download_failures() + 1);
    FLT_RETURN_IF_ERROR(Save("DOWNLOAD:failure"));
    if (rec.download_failures() >= options.max_download_attempts) {
      return Fail(s.WithContext("giving up after " + std::to_string(rec.download_failures()) + " attempts"));
    }
    const auto delay = Backoff(rec.download_failures());
    FLT_LOG(kInfo, "ota") << "download attempt " << rec.download_failures() << " failed (" << s.ToString()
                          << "), retrying in " << delay.count() << " ms";
    deps.sleep(delay);
  }
  return E::kDownloaded;
}

// --- VERIFY / STAGE / SWITCH --------------------------------------------------------------------

Result<OtaEvent> OtaClient::Impl::DoVerify() {
  auto hashed = HashFile(PartPath());
  Status bad;
  if (!hashed.ok()) {
    bad = hashed.status();
  } else if (hashed->second != rec.target().length()) {
    bad = DataLossError("staged file is " + std::to_string(hashed->second) + " bytes, target is " +
                        std::to_string(rec.target().length()));
  } else if (!DigestEquals(hashed->first, rec.target().sha256())) {
    bad = DataLossError("staged file does not match the target SHA-256");
  }
  if (!bad.ok()) {
    // Only after power loss can the verified chunks on disk differ: fetch what is missing.
    rec.set_download_failures(rec.download_failures() + 1);
    if (rec.download_failures() >= options.max_download_attempts) return Fail(bad);
    FLT_LOG(kWarn, "ota") << "verify failed (" << bad.ToString() << "): downloading again";
    return E::kRetryDownload;
  }
  const std::string cur = CurrentSlot();
  rec.set_prev_slot(cur);
  rec.set_new_slot(std::string(cur == kSlotA ? kSlotB : kSlotA));
  return E::kVerified;
}

Result<OtaEvent> OtaClient::Impl::DoStage() {
  const std::string slot = rec.new_slot();
  const fs::path dir = SlotDir(slot);
  std::error_code ec;
  if (slot.empty()) return InternalError("STAGE: no slot chosen");
  if (slot == CurrentSlot()) {
    // Only after losing the newest journal record: the switch already happened. Never
    // overwrite the active slot; continue if it holds exactly this target.
    auto st = SlotTarget(slot);
    auto h = HashFile(dir / "artifact");
    if (st.ok() && st->has_value() && (*st)->sha256() == rec.target().sha256() && h.ok() &&
        h->second == rec.target().length() && DigestEquals(h->first, rec.target().sha256())) {
      return E::kStaged;
    }
    return InternalError("STAGE: refusing to overwrite the active slot '" + slot + "'");
  }
  const bool have_part = fs::exists(PartPath(), ec);
  if (!have_part) {
    // Replay after the rename: the slot holds the artifact if it is complete.
    auto st = SlotTarget(slot);
    if (st.ok() && st->has_value() && (*st)->sha256() == rec.target().sha256()) {
      auto h = HashFile(dir / "artifact");
      if (h.ok() && h->second == rec.target().length() && DigestEquals(h->first, rec.target().sha256())) {
        return E::kStaged;
      }
    }
    rec.set_next_chunk(0);
    return E::kRetryDownload;
  }
  if (replaying) {
    // The .part may have lost data with the power: verify before it becomes a slot.
    auto h = HashFile(PartPath());
    if (!h.ok() || h->second != rec.target().length() || !DigestEquals(h->first, rec.target().sha256())) {
      return E::kRetryDownload;
    }
  }
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("STAGE: cannot create " + dir.string() + ": " + ec.message());
  FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / "target.pb", AsBytes(rec.target().SerializeAsString())));
  Point("rename:part:before");
  if (::rename(PartPath().c_str(), (dir / "artifact").c_str()) != 0) return Errno("rename .part into slot");
  Point("rename:part:after");
  FLT_RETURN_IF_ERROR(FsyncDir(dir, "slot"));
  FLT_RETURN_IF_ERROR(FsyncDir(PartPath().parent_path(), "staging"));
  return E::kStaged;
}

namespace {
Status PointCurrentAt(const fs::path& install_dir, const std::string& slot, const std::function<void(std::string_view)>& point) {
  const fs::path tmp = install_dir / "current.tmp";
  const fs::path link = install_dir / "current";
  ::unlink(tmp.c_str());
  if (slot.empty()) {
    point("rename:current:before");
    if (::unlink(link.c_str()) != 0 && errno != ENOENT) return Errno("unlink current");
    point("rename:current:after");
    return Status::Ok();
  }
  if (::symlink(slot.c_str(), tmp.c_str()) != 0) return Errno("symlink current.tmp");
  point("rename:current:before");
  if (::rename(tmp.c_str(), link.c_str()) != 0) return Errno("rename current.tmp");
  point("rename:current:after");
  return Status::Ok();
}
}  // namespace

Result<OtaEvent> OtaClient::Impl::DoSwitch() {
  FLT_RETURN_IF_ERROR(PointCurrentAt(options.install_dir, rec.new_slot(), [this](std::string_view p) { Point(p); }));
  FLT_RETURN_IF_ERROR(FsyncDir(options.install_dir, "install"));
  return E::kSwitched;
}

// --- HEALTH / ROLLBACK ---------------------------------------------------------------------------

// Re-asserts the switch. Normally a no-op; after a crash that lost the newest journal
// record the link may still (or again) point elsewhere.
Status OtaClient::Impl::EnsureCurrent(const std::string& slot) {
  if (CurrentSlot() == slot) return Status::Ok();
  FLT_RETURN_IF_ERROR(PointCurrentAt(options.install_dir, slot, [this](std::string_view p) { Point(p); }));
  return FsyncDir(options.install_dir, "install");
}

Result<OtaEvent> OtaClient::Impl::DoCommit() {
  FLT_RETURN_IF_ERROR(EnsureCurrent(rec.new_slot()));
  rec.set_outcome(v1::OTA_OUTCOME_SUCCESS);
  rec.clear_error();
  return E::kCommitted;
}

Result<OtaEvent> OtaClient::Impl::DoHealth() {
  FLT_RETURN_IF_ERROR(EnsureCurrent(rec.new_slot()));
  // Counted before the try: a crash or reboot during the trial uses up a try.
  rec.set_health_attempts(rec.health_attempts() + 1);
  FLT_RETURN_IF_ERROR(Save("HEALTH:attempt"));
  if (rec.health_attempts() > options.max_health_attempts) {
    rec.set_error("health check: out of tries (" + std::to_string(options.max_health_attempts) + ")");
    return E::kUnhealthy;
  }
  const fs::path artifact = SlotDir(rec.new_slot()) / "artifact";
  if (rec.health_attempts() == 1 || replaying) {
    auto h = HashFile(artifact);
    if (!h.ok() || h->second != rec.target().length() || !DigestEquals(h->first, rec.target().sha256())) {
      rec.set_error("health check: installed artifact does not match its SHA-256");
      return E::kUnhealthy;
    }
  }
  HealthCheckContext ctx{artifact, &rec.target(), rec.health_attempts()};
  auto figures = deps.health->Check(ctx);
  if (figures.ok()) {
    *rec.mutable_health() = *figures;
    rec.mutable_health()->set_attempts(rec.health_attempts());
    return E::kHealthy;
  }
  rec.set_error("health check: " + figures.status().ToString());
  rec.mutable_health()->set_attempts(rec.health_attempts());
  FLT_LOG(kWarn, "ota") << "health try " << rec.health_attempts() << " failed: " << figures.status().ToString();
  return rec.health_attempts() < options.max_health_attempts ? E::kRetryHealth : E::kUnhealthy;
}

Result<OtaEvent> OtaClient::Impl::DoRollback() {
  FLT_RETURN_IF_ERROR(EnsureCurrent(rec.prev_slot()));
  rec.set_outcome(v1::OTA_OUTCOME_ROLLED_BACK);
  rec.set_failed_state(v1::OTA_STATE_HEALTH);
  rec.set_last_rolled_back_sha256(rec.target().sha256());
  return E::kRolledBack;
}

// --- REPORT -----------------------------------------------------------------------------------

Status OtaClient::Impl::SendPendingReport() {
  v1::Envelope env;
  v1::EnvelopeBody body;
  v1::OtaReport report;
  // The sink gets the report too; decode it from the sealed bytes we keep (our own).
  if (env.ParseFromString(rec.pending_report()) && body.ParseFromString(env.body())) {
    report.ParseFromString(body.payload());
  }
  Status s = deps.reports->Send(AsBytes(rec.pending_report()), report);
  if (s.ok()) {
    rec.clear_pending_report();
    rec.set_report_attempts(0);
    result.report_delivered = true;
    return Save(std::string(ToString(state)) + ":report_sent");
  }
  rec.set_report_attempts(rec.report_attempts() + 1);
  FLT_LOG(kWarn, "ota") << "OTA report not delivered (try " << rec.report_attempts() << "): " << s.ToString();
  if (rec.report_attempts() >= options.max_report_attempts) {
    FLT_LOG(kError, "ota") << "dropping an OTA report after " << rec.report_attempts() << " tries";
    rec.clear_pending_report();
    rec.set_report_attempts(0);
  }
  // Never a rollback: the install itself is unaffected by reporting.
  return Save(std::string(ToString(state)) + ":report_failed");
}

Result<OtaEvent> OtaClient::Impl::DoReport() {
  if (rec.pending_report().empty()) {
    v1::OtaReport r;
    r.set_deployment_id(rec.deployment_id());
    r.set_target_name(rec.target().name());
    r.set_target_sha256(rec.target().sha256());
    r.set_state(rec.outcome() == v1::OTA_OUTCOME_SUCCESS ? v1::OTA_STATE_COMMIT
                : rec.outcome() == v1::OTA_OUTCOME_ROLLED_BACK ? v1::OTA_STATE_ROLLBACK
                                                                : rec.failed_state());
    r.set_outcome(rec.outcome());
    r.set_error(rec.error());
    *r.mutable_health() = rec.health();
    r.set_nonce(rec.nonce());
    r.set_timestamp_ms(deps.clock->NowUnixMillis());
    r.set_bytes_downloaded(rec.bytes_downloaded());
    auto sealed = protocol::SealMessage(*deps.signer, r, deps.report_recipient, *deps.clock, *deps.random);
    if (!sealed.ok()) {
      FLT_LOG(kError, "ota") << "cannot seal OTA report: " << sealed.status().ToString();
      return E::kReportDone;
    }
    rec.set_pending_report(std::string(AsStringView(*sealed)));
    rec.set_report_attempts(0);
    FLT_RETURN_IF_ERROR(Save("REPORT:sealed"));
  }
  FLT_RETURN_IF_ERROR(SendPendingReport());
  // The staging area is no longer needed whatever the outcome.
  std::error_code ec;
  if (rec.target().sha256().size() == security::kSha256Size) fs::remove(PartPath(), ec);
  return E::kReportDone;
}

// --- OtaClient ------------------------------------------------------------------------------------

OtaClient::OtaClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OtaClient::~OtaClient() = default;

Result<std::unique_ptr<OtaClient>> OtaClient::Open(OtaClientOptions options, OtaClientDeps deps) {
  if (!deps.fetcher || !deps.health || !deps.reports || !deps.signer) {
    return InvalidArgumentError("OtaClient: fetcher, health checker, report sink and signer are required");
  }
  if (options.target_name.empty()) return InvalidArgumentError("OtaClient: no target name");
  if (options.max_download_attempts == 0 || options.max_health_attempts == 0) {
    return InvalidArgumentError("OtaClient: attempt limits must be >= 1");
  }
  if (!deps.clock) deps.clock = &RealClock();
  if (!deps.random) deps.random = &OsRandom();
  if (!deps.sleep) deps.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  fs::create_directories(options.install_dir, ec);
  if (ec) return UnavailableError("OtaClient: cannot create directories: " + ec.message());
  auto impl = std::make_unique<Impl>();
  FLT_ASSIGN_OR_RETURN(impl->journal, Journal::Open(options.data_dir / "ota_journal.db", deps.crash_hook));
  impl->options = std::move(options);
  impl->deps = std::move(deps);
  return std::unique_ptr<OtaClient>(new OtaClient(std::move(impl)));
}

Result<CycleResult> OtaClient::RunCycle() { return impl_->Run(); }
OtaState OtaClient::state() const { return impl_->state; }
Journal& OtaClient::journal() { return *impl_->journal; }

Result<std::optional<v1::TargetInfo>> OtaClient::InstalledTarget() const {
  const std::string slot = impl_->CurrentSlot();
  if (slot.empty()) return std::optional<v1::TargetInfo>();
  return impl_->SlotTarget(slot);
}

std::filesystem::path OtaClient::CurrentArtifactPath() const { return impl_->CurrentLink() / "artifact"; }

}  // namespace flotilla::ota
