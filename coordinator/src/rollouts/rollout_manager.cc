#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"
#include "rollout_json.h"
#include "rollout_logic.h"

namespace flotilla::coordinator {
namespace {

namespace fs = std::filesystem;
using DS = DeviceRolloutStatus;

constexpr size_t kNonceBytes = 16;
constexpr std::string_view kRollbackSuffix = "-rollback";

// Schema of component "rollouts" (Database::Migrate(component, ...)): the tables carry the
// rollout_ prefix and the versions live in schema_migrations, so they share the
// coordinator's database with the Store (which owns user_version) or sit in a file of
// their own. v1 says IF NOT EXISTS because files made before component migrations have
// these tables already (versioned by user_version 1); it then records version 1.
constexpr std::string_view kComponent = "rollouts";
constexpr sqlite::Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE IF NOT EXISTS rollout_rollouts(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  deployment_id TEXT NOT NULL UNIQUE,
  spec TEXT NOT NULL,                 -- JSON (rollout_json.h)
  state TEXT NOT NULL,
  phase INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  rollback_published INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_targets(
  rollout_id INTEGER NOT NULL REFERENCES rollout_rollouts(id),
  name TEXT NOT NULL,
  target BLOB NOT NULL,               -- TargetInfo as published when the rollout was created
  previous BLOB,                      -- the release before it (rollback source), if any
  rollback BLOB,                      -- the re-release of `previous` signed by Rollback
  PRIMARY KEY(rollout_id, name));
CREATE TABLE IF NOT EXISTS rollout_devices(
  rollout_id INTEGER NOT NULL REFERENCES rollout_rollouts(id),
  device_id TEXT NOT NULL,
  draw INTEGER NOT NULL,              -- CSPRNG membership draw, 63 bits
  canary INTEGER NOT NULL,
  phase INTEGER NOT NULL DEFAULT -1,
  status TEXT NOT NULL,
  nonce BLOB,
  assigned_ms INTEGER NOT NULL DEFAULT 0,
  reported_ms INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  director_pending INTEGER NOT NULL DEFAULT 0,  -- committed, director file not yet signed
  hint_pending INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(rollout_id, device_id));
CREATE INDEX IF NOT EXISTS rollout_devices_by_draw ON rollout_devices(rollout_id, status, canary, draw);
CREATE INDEX IF NOT EXISTS rollout_devices_by_time ON rollout_devices(rollout_id, assigned_ms);
CREATE TABLE IF NOT EXISTS rollout_events(
  id INTEGER PRIMARY KEY,
  rollout_id INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  event TEXT NOT NULL,
  detail TEXT NOT NULL);
)sql"},
    // Director re-signing before expiry: when each device's signed assignment expires
    // (0: unknown, re-sign at the next Tick; -1: the file now belongs to another
    // rollout), and the nonce the re-sign replaced (reports may still carry it).
    {2, R"sql(
ALTER TABLE rollout_devices ADD COLUMN director_expires_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollout_devices ADD COLUMN prev_nonce BLOB;
CREATE INDEX rollout_devices_by_expiry ON rollout_devices(rollout_id, director_expires_ms);
)sql"},
};

Bytes Serialize(const google::protobuf::MessageLite& m) {
  Bytes b(m.ByteSizeLong());
  FLT_CHECK(m.SerializeToArray(b.data(), static_cast<int>(b.size())));
  return b;
}

Result<v1::TargetInfo> ParseTarget(const Bytes& b) {
  v1::TargetInfo t;
  if (!t.ParseFromArray(b.data(), static_cast<int>(b.size()))) return DataLossError("rollouts db: bad TargetInfo");
  return t;
}

bool Compatible(const std::vector<v1::TargetInfo>& targets, const std::string& hardware_class) {
  for (const auto& t : targets) {
    if (t.hardware_compat_size() > 0 && std::find(t.hardware_compat().begin(), t.hardware_compat().end(),
                                                  hardware_class) == t.hardware_compat().end()) {
      return false;
    }
  }
  return true;
}

struct TargetRow {
  std::string name;
  v1::TargetInfo target;
  std::optional<v1::TargetInfo> previous;
  std::optional<v1::TargetInfo> rollback;
};

struct RolloutRow {
  RolloutSummary s;
  bool rollback_published = false;
  std::vector<TargetRow> targets;
};

}  // namespace

struct RolloutManager::Impl {
  RolloutOptions options;
  RolloutDeps deps;
  std::unique_ptr<sqlite::Database> db;  // GUARDED_BY(mu)
  mutable std::mutex mu;
  RolloutStats stats;                                        // GUARDED_BY(mu)
  std::map<int64_t, std::unordered_set<std::string>> known;  // GUARDED_BY(mu) devices seen per rollout

  int64_t Now() const { return deps.clock->NowUnixMillis(); }
  Status Hook(std::string_view point) const { return deps.fault_hook ? deps.fault_hook(point) : Status::Ok(); }
  Bytes NewNonce() const {
    Bytes n(kNonceBytes);
    deps.random->Fill(n);
    return n;
  }

  // --- storage (REQUIRES: mu held) ---------------------------------------------------------
  Status Event(int64_t id, std::string_view event, std::string_view detail);
  Result<RolloutRow> Load(int64_t id);
  Result<std::vector<int64_t>> Ids(bool unfinished_only);
  Result<RolloutCounts> Counts(const RolloutRow& r, uint32_t phase, uint64_t* phase_members, uint64_t* phase_succeeded,
                               uint64_t* canary_pending, uint64_t* assigned_non_canary, uint64_t* eligible_non_canary);
  Result<RolloutSummary> Summary(int64_t id);
  Status SetState(RolloutRow& r, RolloutEvent event, const std::string& reason);
  // Device ids of rollout `id` matching the SQL condition `where` (trusted, constant).
  Result<std::vector<std::string>> DeviceIds(int64_t id, std::string_view where);
  // Gives `ids` a new status and a fresh nonce, with both side effects pending.
  Status Renonce(int64_t id, const std::vector<std::string>& ids, DS status);
  // Clears a *_pending column for `ids` in one transaction.
  Status ClearPending(int64_t id, const std::vector<std::string>& ids, std::string_view column);

  // --- the steps of Tick (REQUIRES: mu held) -----------------------------------------------
  Status TickOne(int64_t id);
  Status SyncFleet(RolloutRow& r);
  Status Evaluate(RolloutRow& r);
  Status AssignNew(RolloutRow& r);
  Status Retract(RolloutRow& r);
  Status RollbackStep(RolloutRow& r);
  Status FinishSideEffects(RolloutRow& r);
  // Marks assignments that expire within options.director_refresh_window for re-signing.
  Status RefreshDirectors(RolloutRow& r);
  Result<v1::DirectorAssignment> DirectorFor(const RolloutRow& r, const std::string& device, DS status,
                                             const Bytes& nonce) const;
  Status Command(int64_t id, RolloutEvent event, const std::string& reason);
  Result<protocol::OpenedEnvelope> OpenReport(ByteSpan envelope) const;
  Status Report(const protocol::OpenedEnvelope& env);
};

// --- storage ----------------------------------------------------------------------------------

Status RolloutManager::Impl::Event(int64_t id, std::string_view event, std::string_view detail) {
  FLT_ASSIGN_OR_RETURN(auto st,
                       db->Prepare("INSERT INTO rollout_events(rollout_id, at_ms, event, detail) VALUES(?,?,?,?)"));
  return st.Bind(1, id).Bind(2, Now()).Bind(3, event).Bind(4, detail).Run();
}

Result<RolloutRow> RolloutManager::Impl::Load(int64_t id) {
  FLT_ASSIGN_OR_RETURN(auto st,
                       db->Prepare("SELECT name, deployment_id, spec, state, phase, reason, rollback_published, "
                                   "created_ms, updated_ms FROM rollout_rollouts WHERE id = ?"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("rollout " + std::to_string(id) + " does not exist");
  RolloutRow r;
  r.s.id = id;
  r.s.name = st.ColumnText(0);
  r.s.deployment_id = st.ColumnText(1);
  auto spec = internal::SpecFromJsonText(st.ColumnText(2));
  if (!spec.ok()) return DataLossError("rollouts db: rollout " + std::to_string(id) + ": " + spec.status().ToString());
  r.s.spec = std::move(spec).value();
  FLT_ASSIGN_OR_RETURN(r.s.state, ParseRolloutState(st.ColumnText(3)));
  r.s.phase = static_cast<uint32_t>(st.ColumnInt(4));
  r.s.reason = st.ColumnText(5);
  r.rollback_published = st.ColumnInt(6) != 0;
  r.s.created_ms = st.ColumnInt(7);
  r.s.updated_ms = st.ColumnInt(8);
  if (r.s.phase >= r.s.spec.phases.size()) return DataLossError("rollouts db: phase index out of range");
  FLT_ASSIGN_OR_RETURN(auto tt, db->Prepare("SELECT name, target, previous, rollback FROM rollout_targets "
                                            "WHERE rollout_id = ? ORDER BY name"));
  tt.Bind(1, id);
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool more, tt.Step());
    if (!more) break;
    TargetRow t;
    t.name = tt.ColumnText(0);
    FLT_ASSIGN_OR_RETURN(t.target, ParseTarget(tt.ColumnBlob(1)));
    if (!tt.ColumnIsNull(2)) {
      FLT_ASSIGN_OR_RETURN(t.previous, ParseTarget(tt.ColumnBlob(2)));
    }
    if (!tt.ColumnIsNull(3)) {
      FLT_ASSIGN_OR_RETURN(t.rollback, ParseTarget(tt.ColumnBlob(3)));
    }
    r.targets.push_back(std::move(t));
  }
  return r;
}

Result<std::vector<int64_t>> RolloutManager::Impl::Ids(bool unfinished_only) {
  FLT_ASSIGN_OR_RETURN(
      auto st, db->Prepare(unfinished_only ? "SELECT id FROM rollout_rollouts WHERE state != 'rolled_back' ORDER BY id"
                                           : "SELECT id FROM rollout_rollouts ORDER BY id"));
  std::vector<int64_t> ids;
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool more, st.Step());
    if (!more) break;
    ids.push_back(st.ColumnInt(0));
  }
  return ids;
}

Result<RolloutCounts> RolloutManager::Impl::Counts(const RolloutRow& r, uint32_t phase, uint64_t* phase_members,
                                                   uint64_t* phase_succeeded, uint64_t* canary_pending,
                                                   uint64_t* assigned_non_canary, uint64_t* eligible_non_canary) {
  FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("SELECT status, canary, phase, count(*) FROM rollout_devices "
                                            "WHERE rollout_id = ? GROUP BY status, canary, phase"));
  st.Bind(1, r.s.id);
  RolloutCounts c;
  uint64_t pm = 0, ps = 0, cp = 0, anc = 0, enc = 0;
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool more, st.Step());
    if (!more) break;
    FLT_ASSIGN_OR_RETURN(DS status, ParseDeviceRolloutStatus(st.ColumnText(0)));
    const bool canary = st.ColumnInt(1) != 0;
    const int64_t ph = st.ColumnInt(2);
    const auto n = static_cast<uint64_t>(st.ColumnInt(3));
    c.eligible += n;
    if (!canary) enc += n;
    if (status == DS::kPending) {
      if (canary) cp += n;
      continue;
    }
    c.assigned += n;
    if (!canary) anc += n;
    if (ph == static_cast<int64_t>(phase)) {
      pm += n;
      if (status == DS::kSucceeded) ps += n;
    }
    switch (status) {
      case DS::kAssigned:
        c.in_progress += n;
        break;
      case DS::kSucceeded:
        c.succeeded += n;
        break;
      case DS::kFailed:
        c.failed += n;
        break;
      case DS::kRetracted:
        c.retracted += n;
        break;
      case DS::kReverting:
        c.reverting += n;
        break;
      case DS::kReverted:
        c.reverted += n;
        break;
      case DS::kPending:
        break;
    }
  }
  if (phase_members) *phase_members = pm;
  if (phase_succeeded) *phase_succeeded = ps;
  if (canary_pending) *canary_pending = cp;
  if (assigned_non_canary) *assigned_non_canary = anc;
  if (eligible_non_canary) *eligible_non_canary = enc;
  return c;
}

Result<RolloutSummary> RolloutManager::Impl::Summary(int64_t id) {
  FLT_ASSIGN_OR_RETURN(RolloutRow r, Load(id));
  uint64_t enc = 0;
  FLT_ASSIGN_OR_RETURN(r.s.counts, Counts(r, r.s.phase, nullptr, nullptr, nullptr, nullptr, &enc));
  const PhaseSpec& p = r.s.spec.phases[r.s.phase];
  r.s.phase_quota = (r.s.counts.eligible - enc) + (p.canary ? 0 : internal::PercentQuota(p.percent, enc));
  return r.s;
}

Status RolloutManager::Impl::SetState(RolloutRow& r, RolloutEvent event, const std::string& reason) {
  std::optional<RolloutState> next = NextRolloutState(r.s.state, event);
  if (!next) {
    return FailedPreconditionError("rollout " + std::to_string(r.s.id) + " is " + std::string(ToString(r.s.state)) +
                                   ": cannot " + std::string(ToString(event)));
  }
  if (Status tx = db->Transaction([&]() -> Status {
        FLT_ASSIGN_OR_RETURN(
            auto st, db->Prepare("UPDATE rollout_rollouts SET state = ?, reason = ?, updated_ms = ? WHERE id = ?"));
        FLT_RETURN_IF_ERROR(st.Bind(1, ToString(*next)).Bind(2, reason).Bind(3, Now()).Bind(4, r.s.id).Run());
        return Event(r.s.id, ToString(event), reason);
      });
      !tx.ok()) {
    return tx;
  }
  FLT_LOG(kInfo, "rollout") << "rollout " << r.s.id << " (" << r.s.name << "): " << ToString(r.s.state) << " --"
                            << ToString(event) << "--> " << ToString(*next) << (reason.empty() ? "" : ": ") << reason;
  r.s.state = *next;
  r.s.reason = reason;
  return Status::Ok();
}

Result<std::vector<std::string>> RolloutManager::Impl::DeviceIds(int64_t id, std::string_view where) {
  FLT_ASSIGN_OR_RETURN(auto sel, db->Prepare("SELECT device_id FROM rollout_devices WHERE rollout_id = ? AND (" +
                                             std::string(where) + ")"));
  sel.Bind(1, id);
  std::vector<std::string> ids;
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool more, sel.Step());
    if (!more) break;
    ids.push_back(sel.ColumnText(0));
  }
  return ids;
}

Status RolloutManager::Impl::Renonce(int64_t id, const std::vector<std::string>& ids, DS status) {
  FLT_ASSIGN_OR_RETURN(auto st,
                       db->Prepare("UPDATE rollout_devices SET status = ?, nonce = ?, prev_nonce = NULL, error = '', "
                                   "director_pending = 1, hint_pending = 1 WHERE rollout_id = ? AND device_id = ?"));
  for (const auto& d : ids) {
    FLT_RETURN_IF_ERROR(st.Bind(1, ToString(status)).BindBlob(2, NewNonce()).Bind(3, id).Bind(4, d).Run());
    st.Reset();
  }
  return Status::Ok();
}

Status RolloutManager::Impl::ClearPending(int64_t id, const std::vector<std::string>& ids, std::string_view column) {
  if (ids.empty()) return Status::Ok();
  return db->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("UPDATE rollout_devices SET " + std::string(column) +
                                              " = 0 WHERE rollout_id = ? AND device_id = ?"));
    for (const auto& d : ids) {
      FLT_RETURN_IF_ERROR(st.Bind(1, id).Bind(2, d).Run());
      st.Reset();
    }
    return Status::Ok();
  });
}

// --- Tick steps -------------------------------------------------------------------------------

Status RolloutManager::Impl::SyncFleet(RolloutRow& r) {
  if (deps.fleet == nullptr) return Status::Ok();
  FLT_ASSIGN_OR_RETURN(std::vector<FleetDevice> fleet, deps.fleet->ListDevices());
  auto [it, fresh] = known.try_emplace(r.s.id);
  std::unordered_set<std::string>& seen = it->second;
  if (fresh) {
    FLT_ASSIGN_OR_RETURN(std::vector<std::string> ids, DeviceIds(r.s.id, "1"));
    seen.insert(ids.begin(), ids.end());
  }
  std::vector<v1::TargetInfo> targets;
  for (const auto& t : r.targets) targets.push_back(t.target);
  const std::set<std::string> canaries(r.s.spec.canary_devices.begin(), r.s.spec.canary_devices.end());
  std::vector<const FleetDevice*> joiners;
  for (const auto& d : fleet) {
    if (seen.count(d.device_id) == 0 && protocol::IsValidName(d.device_id) && Compatible(targets, d.hardware_class)) {
      joiners.push_back(&d);
    }
  }
  if (joiners.empty()) return Status::Ok();
  if (Status tx = db->Transaction([&]() -> Status {
        FLT_ASSIGN_OR_RETURN(auto st,
                             db->Prepare("INSERT OR IGNORE INTO rollout_devices(rollout_id, device_id, draw, canary, "
                                         "status) VALUES(?,?,?,?,'pending')"));
        for (const FleetDevice* d : joiners) {
          // The draw decides phase membership: from the CSPRNG, recorded, never redrawn.
          const auto draw = static_cast<int64_t>(deps.random->NextU64() >> 1);
          FLT_RETURN_IF_ERROR(st.Bind(1, r.s.id)
                                  .Bind(2, d->device_id)
                                  .Bind(3, draw)
                                  .Bind(4, int64_t{canaries.count(d->device_id) ? 1 : 0})
                                  .Run());
          st.Reset();
        }
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  for (const FleetDevice* d : joiners) seen.insert(d->device_id);
  return Status::Ok();
}

Status RolloutManager::Impl::Evaluate(RolloutRow& r) {
  // Completed rollouts keep assigning late joiners, so their failures still count.
  while (r.s.state == RolloutState::kActive || r.s.state == RolloutState::kCompleted) {
    const PhaseSpec& phase = r.s.spec.phases[r.s.phase];
    internal::PhaseProgress p;
    uint64_t canary_pending = 0, anc = 0, enc = 0;
    FLT_ASSIGN_OR_RETURN(RolloutCounts c,
                         Counts(r, r.s.phase, &p.phase_members, &p.phase_succeeded, &canary_pending, &anc, &enc));
    p.eligible = c.eligible;
    p.failed = c.failed;
    p.finished = c.succeeded + c.failed;
    p.quota_filled = canary_pending == 0 && anc >= (phase.canary ? 0 : internal::PercentQuota(phase.percent, enc));
    std::string reason;
    const internal::PhaseVerdict v = internal::EvaluatePhase(phase, p, &reason);
    if (v == internal::PhaseVerdict::kHalt) return SetState(r, RolloutEvent::kHalt, reason);
    if (v == internal::PhaseVerdict::kContinue || r.s.state == RolloutState::kCompleted) return Status::Ok();
    if (r.s.phase + 1 == r.s.spec.phases.size()) return SetState(r, RolloutEvent::kComplete, reason);
    if (Status tx = db->Transaction([&]() -> Status {
          FLT_ASSIGN_OR_RETURN(auto st,
                               db->Prepare("UPDATE rollout_rollouts SET phase = ?, updated_ms = ? WHERE id = ?"));
          FLT_RETURN_IF_ERROR(st.Bind(1, int64_t{r.s.phase + 1}).Bind(2, Now()).Bind(3, r.s.id).Run());
          return Event(r.s.id, "advance", reason);
        });
        !tx.ok()) {
      return tx;
    }
    FLT_LOG(kInfo, "rollout") << "rollout " << r.s.id << ": " << reason << "; next phase "
                              << r.s.spec.phases[r.s.phase + 1].name;
    ++r.s.phase;
    if (phase.pause_after)
      return SetState(r, RolloutEvent::kPause, "phase " + phase.name + " finished; resume to go on");
  }
  return Status::Ok();
}

Status RolloutManager::Impl::AssignNew(RolloutRow& r) {
  // The repository must still publish exactly what the rollout recorded, else the
  // director would sign assignments that devices refuse (or, worse, a different build).
  for (const auto& t : r.targets) {
    auto it = deps.repository->targets().find(t.name);
    if (it == deps.repository->targets().end() || it->second.sha256() != t.target.sha256() ||
        it->second.release_counter() != t.target.release_counter()) {
      return SetState(r, RolloutEvent::kHalt, "target " + t.name + " was re-published since the rollout began");
    }
  }
  const PhaseSpec& phase = r.s.spec.phases[r.s.phase];
  uint64_t canary_pending = 0, anc = 0, enc = 0;
  FLT_RETURN_IF_ERROR(Counts(r, r.s.phase, nullptr, nullptr, &canary_pending, &anc, &enc).status());
  const uint64_t quota = phase.canary ? 0 : internal::PercentQuota(phase.percent, enc);
  uint64_t want_non_canary = quota > anc ? quota - anc : 0;
  uint64_t budget = canary_pending + want_non_canary;
  if (budget == 0) return Status::Ok();
  if (r.s.spec.max_assignments_per_minute > 0) {
    FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("SELECT count(*) FROM rollout_devices WHERE rollout_id = ? AND "
                                              "assigned_ms > ?"));
    st.Bind(1, r.s.id).Bind(2, Now() - 60'000);
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    const auto recent = row ? static_cast<uint64_t>(st.ColumnInt(0)) : 0;
    const uint64_t cap = r.s.spec.max_assignments_per_minute;
    budget = std::min(budget, cap > recent ? cap - recent : 0);
  }
  if (budget == 0) return Status::Ok();
  std::vector<std::string> chosen;
  // Canaries first, then the lowest draws: the phase's random members.
  FLT_ASSIGN_OR_RETURN(auto sel, db->Prepare("SELECT device_id FROM rollout_devices WHERE rollout_id = ? AND "
                                             "status = 'pending' AND canary = ? ORDER BY draw LIMIT ?"));
  for (int canary : {1, 0}) {
    const uint64_t take = std::min<uint64_t>(budget - chosen.size(), canary ? canary_pending : want_non_canary);
    if (take == 0) continue;
    sel.Reset();
    sel.Bind(1, r.s.id).Bind(2, int64_t{canary}).Bind(3, static_cast<int64_t>(take));
    for (;;) {
      FLT_ASSIGN_OR_RETURN(bool more, sel.Step());
      if (!more) break;
      chosen.push_back(sel.ColumnText(0));
    }
  }
  if (chosen.empty()) return Status::Ok();
  const int64_t now = Now();
  if (Status tx = db->Transaction([&]() -> Status {
        FLT_ASSIGN_OR_RETURN(auto st,
                             db->Prepare("UPDATE rollout_devices SET status = 'assigned', phase = ?, nonce = ?, "
                                         "prev_nonce = NULL, assigned_ms = ?, director_pending = 1, hint_pending = 1 "
                                         "WHERE rollout_id = ? AND device_id = ?"));
        for (const auto& d : chosen) {
          FLT_RETURN_IF_ERROR(
              st.Bind(1, int64_t{r.s.phase}).BindBlob(2, NewNonce()).Bind(3, now).Bind(4, r.s.id).Bind(5, d).Run());
          st.Reset();
        }
        return Event(r.s.id, "assign", std::to_string(chosen.size()) + " devices in phase " + phase.name);
      });
      !tx.ok()) {
    return tx;
  }
  FLT_LOG(kInfo, "rollout") << "rollout " << r.s.id << ": assigned " << chosen.size() << " devices (phase "
                            << phase.name << ")";
  return Hook("assign:committed");
}

Status RolloutManager::Impl::Retract(RolloutRow& r) {
  return db->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(std::vector<std::string> ids, DeviceIds(r.s.id, "status = 'assigned'"));
    if (ids.empty()) return Status::Ok();
    FLT_RETURN_IF_ERROR(Renonce(r.s.id, ids, DS::kRetracted));
    return Event(r.s.id, "retract", std::to_string(ids.size()) + " devices");
  });
}

Status RolloutManager::Impl::RollbackStep(RolloutRow& r) {
  if (!r.rollback_published) {
    // Re-release the previous artifact (already content-addressed in the repository)
    // with a higher release counter: devices never accept a counter going back.
    for (auto& t : r.targets) {
      FLT_CHECK(t.previous.has_value());  // Rollback() checked
      const v1::TargetInfo& prev = *t.previous;
      ota::TargetSpec spec;
      spec.file = deps.repository->dir() / ota::ArtifactPath(AsBytes(prev.sha256()));
      spec.name = t.name;
      spec.kind = prev.kind();
      uint64_t counter = t.target.release_counter();
      if (auto it = deps.repository->targets().find(t.name); it != deps.repository->targets().end()) {
        counter = std::max(counter, it->second.release_counter());
      }
      spec.release_counter = counter + 1;
      spec.hardware_compat.assign(prev.hardware_compat().begin(), prev.hardware_compat().end());
      spec.base_model_sha256 = ToBytes(prev.base_model_sha256());
      for (const auto& c : prev.chunks()) spec.chunk_boundaries.push_back(c.offset());
      spec.max_chunk_bytes = prev.chunk_size() > 0 ? prev.chunk_size() : ota::kMaxChunkBytes;
      spec.custom = prev.custom();
      FLT_ASSIGN_OR_RETURN(v1::TargetInfo info, deps.repository->AddTarget(spec));
      if (info.sha256() != prev.sha256()) return DataLossError("rollback: stored artifact of " + t.name + " changed");
      t.rollback = std::move(info);
    }
    FLT_RETURN_IF_ERROR(deps.repository->Publish());
    FLT_RETURN_IF_ERROR(Hook("rollback:published"));
    if (Status tx = db->Transaction([&]() -> Status {
          FLT_ASSIGN_OR_RETURN(
              auto st, db->Prepare("UPDATE rollout_targets SET rollback = ? WHERE rollout_id = ? AND name = ?"));
          for (const auto& t : r.targets) {
            FLT_RETURN_IF_ERROR(st.BindBlob(1, Serialize(*t.rollback)).Bind(2, r.s.id).Bind(3, t.name).Run());
            st.Reset();
          }
          // Every device the rollout ever assigned goes back (reported or not: a retracted or
          // silent device may have installed anyway; one already on the old build no-ops).
          FLT_ASSIGN_OR_RETURN(std::vector<std::string> ids, DeviceIds(r.s.id, "status != 'pending'"));
          FLT_RETURN_IF_ERROR(Renonce(r.s.id, ids, DS::kReverting));
          FLT_ASSIGN_OR_RETURN(auto rr, db->Prepare("UPDATE rollout_rollouts SET rollback_published = 1 WHERE id = ?"));
          FLT_RETURN_IF_ERROR(rr.Bind(1, r.s.id).Run());
          return Event(r.s.id, "rollback_published", std::to_string(ids.size()) + " devices to revert");
        });
        !tx.ok()) {
      return tx;
    }
    r.rollback_published = true;
  }
  FLT_RETURN_IF_ERROR(FinishSideEffects(r));
  return SetState(r, RolloutEvent::kRollbackDone, r.s.reason);
}

Result<v1::DirectorAssignment> RolloutManager::Impl::DirectorFor(const RolloutRow& r, const std::string& device,
                                                                 DS status, const Bytes& nonce) const {
  v1::DirectorAssignment a;
  a.set_device_id(device);
  a.set_nonce(std::string(AsStringView(nonce)));
  const bool rollback = status == DS::kReverting || status == DS::kReverted;
  a.set_deployment_id(rollback ? r.s.deployment_id + std::string(kRollbackSuffix) : r.s.deployment_id);
  if (status == DS::kRetracted) return a;  // an empty assignment: install nothing (Uptane: names the device)
  for (const auto& t : r.targets) {
    const v1::TargetInfo* info = rollback ? (t.rollback ? &*t.rollback : nullptr) : &t.target;
    if (info == nullptr) return InternalError("rollback target of " + t.name + " not recorded");
    v1::AssignedTarget* at = a.add_targets();
    at->set_name(info->name());
    at->set_sha256(info->sha256());
    at->set_length(info->length());
    at->set_release_counter(info->release_counter());
  }
  return a;
}

Status RolloutManager::Impl::FinishSideEffects(RolloutRow& r) {
  struct Pending {
    std::string device;
    DS status;
    Bytes nonce;
    bool director;
    bool hint;
  };
  std::vector<Pending> pending;
  {
    FLT_ASSIGN_OR_RETURN(auto sel, db->Prepare("SELECT device_id, status, nonce, director_pending, hint_pending FROM "
                                               "rollout_devices WHERE rollout_id = ? AND "
                                               "(director_pending = 1 OR hint_pending = 1)"));
    sel.Bind(1, r.s.id);
    for (;;) {
      FLT_ASSIGN_OR_RETURN(bool more, sel.Step());
      if (!more) break;
      FLT_ASSIGN_OR_RETURN(DS status, ParseDeviceRolloutStatus(sel.ColumnText(1)));
      pending.push_back({sel.ColumnText(0), status, sel.ColumnBlob(2), sel.ColumnInt(3) != 0, sel.ColumnInt(4) != 0});
    }
  }
  if (pending.empty()) return Status::Ok();
  // 1. Director assignments (the repository writes each file atomically), with the expiry
  //    each got, for RefreshDirectors.
  std::vector<std::pair<std::string, int64_t>> signed_rows;
  Status sign_error;
  for (const auto& p : pending) {
    if (!p.director) continue;
    auto a = DirectorFor(r, p.device, p.status, p.nonce);
    auto wire = a.ok() ? deps.repository->Assign(*a) : Result<Bytes>(a.status());
    auto md = wire.ok() ? ota::ParseTrustedMetadata(*wire, v1::ROLE_TYPE_DIRECTOR) : Result<v1::Metadata>(wire.status());
    if (!md.ok()) {
      sign_error = md.status();
      break;
    }
    signed_rows.emplace_back(p.device, md->expires_ms());
  }
  stats.assignments_signed += signed_rows.size();
  if (!signed_rows.empty()) {
    Status tx = db->Transaction([&]() -> Status {
      FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("UPDATE rollout_devices SET director_pending = 0, "
                                                "director_expires_ms = ? WHERE rollout_id = ? AND device_id = ?"));
      for (const auto& [device, expires] : signed_rows) {
        FLT_RETURN_IF_ERROR(st.Bind(1, expires).Bind(2, r.s.id).Bind(3, device).Run());
        st.Reset();
      }
      return Status::Ok();
    });
    if (!tx.ok()) return tx;
  }
  FLT_RETURN_IF_ERROR(sign_error);
  FLT_RETURN_IF_ERROR(Hook("assign:signed"));
  // 2. Hints: best effort (devices also poll, and never trust a hint).
  std::vector<std::string> hinted;
  for (const auto& p : pending) {
    if (!p.hint) continue;  // a re-signed assignment changes nothing for the device
    hinted.push_back(p.device);
    if (deps.transport == nullptr || deps.signer == nullptr) continue;
    v1::UpdateHint hint;
    hint.set_deployment_id(r.s.deployment_id);
    hint.set_repository_url(r.s.spec.repository_url);
    hint.set_timestamp_version(deps.repository->timestamp_version());
    auto sealed = protocol::SealMessage(*deps.signer, hint, p.device, *deps.clock, *deps.random);
    auto topic =
        protocol::FormatTopic(protocol::Topic::Command(p.device, std::string(protocol::topic_names::kOtaCommand)));
    Status s = !sealed.ok() ? sealed.status() : !topic.ok() ? topic.status() : Status::Ok();
    if (s.ok()) {
      protocol::PublishOptions po;
      po.qos = 1;
      po.message_expiry_seconds = options.hint_expiry_seconds;
      s = deps.transport->Publish(*topic, *sealed, po);
    }
    if (s.ok()) {
      ++stats.hints_sent;
    } else {
      ++stats.hint_failures;
      FLT_LOG(kDebug, "rollout") << "hint to " << p.device << " failed: " << s.ToString();
    }
  }
  return ClearPending(r.s.id, hinted, "hint_pending");
}

Status RolloutManager::Impl::RefreshDirectors(RolloutRow& r) {
  if (options.director_refresh_window.count() <= 0) return Status::Ok();
  struct Due {
    std::string device;
    Bytes nonce;
  };
  std::vector<Due> due;
  {
    FLT_ASSIGN_OR_RETURN(auto sel, db->Prepare("SELECT device_id, nonce FROM rollout_devices WHERE rollout_id = ? "
                                               "AND status != 'pending' AND director_pending = 0 AND "
                                               "director_expires_ms >= 0 AND director_expires_ms < ?"));
    sel.Bind(1, r.s.id).Bind(2, Now() + options.director_refresh_window.count());
    for (;;) {
      FLT_ASSIGN_OR_RETURN(bool more, sel.Step());
      if (!more) break;
      due.push_back({sel.ColumnText(0), sel.ColumnBlob(1)});
    }
  }
  if (due.empty()) return Status::Ok();
  // Only an assignment still in force is renewed: if another rollout signed the device's
  // file since (its nonce differs), that one owns it and this row stops looking.
  std::vector<std::string> renew, superseded;
  for (const auto& d : due) {
    auto wire = ReadFileBytes(deps.repository->dir() / ota::DeviceDirectorPath(d.device),
                              ota::MaxMetadataBytes(v1::ROLE_TYPE_DIRECTOR));
    auto md = wire.ok() ? ota::ParseTrustedMetadata(*wire, v1::ROLE_TYPE_DIRECTOR) : Result<v1::Metadata>(wire.status());
    const bool ours = md.ok() && md->director().device_id() == d.device &&
                      ConstantTimeEqual(AsBytes(md->director().nonce()), d.nonce);
    (ours ? renew : superseded).push_back(d.device);
  }
  Status tx = db->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(auto gone, db->Prepare("UPDATE rollout_devices SET director_expires_ms = -1 "
                                                "WHERE rollout_id = ? AND device_id = ?"));
    for (const auto& d : superseded) {
      FLT_RETURN_IF_ERROR(gone.Bind(1, r.s.id).Bind(2, d).Run());
      gone.Reset();
    }
    // Same targets, same status; new nonce and (when signed) new expiry. No hint: the
    // device has nothing new to do.
    FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("UPDATE rollout_devices SET prev_nonce = nonce, nonce = ?, "
                                              "director_pending = 1 WHERE rollout_id = ? AND device_id = ?"));
    for (const auto& d : renew) {
      FLT_RETURN_IF_ERROR(st.BindBlob(1, NewNonce()).Bind(2, r.s.id).Bind(3, d).Run());
      st.Reset();
    }
    return Event(r.s.id, "refresh_directors",
                 std::to_string(renew.size()) + " re-signed, " + std::to_string(superseded.size()) + " superseded");
  });
  if (!tx.ok()) return tx;
  stats.assignments_refreshed += renew.size();
  FLT_LOG(kInfo, "rollout") << "rollout " << r.s.id << ": re-signing " << renew.size()
                            << " director assignments before they expire";
  return Status::Ok();
}

Status RolloutManager::Impl::TickOne(int64_t id) {
  FLT_ASSIGN_OR_RETURN(RolloutRow r, Load(id));
  // Every state, finished ones included: devices keep checking their assignment.
  FLT_RETURN_IF_ERROR(RefreshDirectors(r));
  switch (r.s.state) {
    case RolloutState::kActive:
    case RolloutState::kCompleted:
      FLT_RETURN_IF_ERROR(SyncFleet(r));
      FLT_RETURN_IF_ERROR(Evaluate(r));
      // Finish what a crash interrupted before anything new.
      FLT_RETURN_IF_ERROR(FinishSideEffects(r));
      if (r.s.state == RolloutState::kActive || r.s.state == RolloutState::kCompleted) {
        FLT_RETURN_IF_ERROR(AssignNew(r));
      }
      break;
    case RolloutState::kAborted:
      FLT_RETURN_IF_ERROR(Retract(r));
      break;
    case RolloutState::kRollingBack:
      return RollbackStep(r);
    case RolloutState::kPaused:
    case RolloutState::kHalted:
    case RolloutState::kRolledBack:
      break;
  }
  return FinishSideEffects(r);
}

Status RolloutManager::Impl::Command(int64_t id, RolloutEvent event, const std::string& reason) {
  FLT_ASSIGN_OR_RETURN(RolloutRow r, Load(id));
  if (event == RolloutEvent::kRollback) {
    for (const auto& t : r.targets) {
      if (!t.previous) {
        return FailedPreconditionError("rollout " + std::to_string(id) + ": target " + t.name +
                                       " has no previous release to roll back to");
      }
    }
  }
  FLT_RETURN_IF_ERROR(SetState(r, event, reason));
  // A resumed rollout is judged at once, so a halt that still holds shows immediately.
  if (event == RolloutEvent::kResume) return Evaluate(r);
  return Status::Ok();
}

Result<protocol::OpenedEnvelope> RolloutManager::Impl::OpenReport(ByteSpan envelope) const {
  if (deps.device_keys == nullptr) return FailedPreconditionError("rollout report: no device key registry");
  protocol::OpenOptions oo;
  oo.recipients = {std::string(protocol::kCoordinatorId)};
  oo.max_age = options.report_max_age;
  return protocol::Open(envelope, *deps.device_keys, *deps.clock, oo);
}

Status RolloutManager::Impl::Report(const protocol::OpenedEnvelope& env) {
  FLT_ASSIGN_OR_RETURN(v1::OtaReport report, protocol::UnpackPayload<v1::OtaReport>(env));
  std::string deployment = report.deployment_id();
  bool rollback = false;
  if (deployment.size() > kRollbackSuffix.size() && deployment.ends_with(kRollbackSuffix)) {
    deployment.resize(deployment.size() - kRollbackSuffix.size());
    rollback = true;
  }
  FLT_ASSIGN_OR_RETURN(auto find, db->Prepare("SELECT id FROM rollout_rollouts WHERE deployment_id = ?"));
  find.Bind(1, deployment);
  FLT_ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found)
    return NotFoundError("rollout report from " + env.sender_id + ": unknown deployment " + report.deployment_id());
  const int64_t id = find.ColumnInt(0);
  FLT_ASSIGN_OR_RETURN(auto dev, db->Prepare("SELECT status, nonce, prev_nonce FROM rollout_devices WHERE "
                                             "rollout_id = ? AND device_id = ?"));
  dev.Bind(1, id).Bind(2, env.sender_id);
  FLT_ASSIGN_OR_RETURN(bool known_device, dev.Step());
  if (!known_device)
    return NotFoundError("rollout report: " + env.sender_id + " is not in rollout " + std::to_string(id));
  FLT_ASSIGN_OR_RETURN(DS status, ParseDeviceRolloutStatus(dev.ColumnText(0)));
  // A re-signed assignment (RefreshDirectors) names the same targets under a new nonce; a
  // device that acted on the one it replaced reports with that nonce.
  const auto matches = [&report](const Bytes& nonce) {
    return !nonce.empty() && ConstantTimeEqual(nonce, AsBytes(report.nonce()));
  };
  if (!matches(dev.ColumnBlob(1)) && !matches(dev.ColumnBlob(2))) {
    return PermissionDeniedError("rollout report from " + env.sender_id + ": nonce does not match its assignment");
  }
  const bool final_outcome = report.outcome() == v1::OTA_OUTCOME_SUCCESS ||
                             report.outcome() == v1::OTA_OUTCOME_FAILURE ||
                             report.outcome() == v1::OTA_OUTCOME_ROLLED_BACK;
  // Only the first final outcome per assignment counts (QoS 1 redelivers duplicates).
  const DS from = rollback ? DS::kReverting : DS::kAssigned;
  if (!final_outcome || status != from) return Status::Ok();
  FLT_ASSIGN_OR_RETURN(RolloutRow r, Load(id));
  DS to = DS::kFailed;
  if (report.outcome() == v1::OTA_OUTCOME_SUCCESS) {
    bool ours = false;
    for (const auto& t : r.targets) {
      const v1::TargetInfo* info = rollback ? (t.rollback ? &*t.rollback : nullptr) : &t.target;
      ours =
          ours || (info != nullptr && info->name() == report.target_name() && info->sha256() == report.target_sha256());
    }
    if (!ours)
      return InvalidArgumentError("rollout report from " + env.sender_id + ": success for a target not in the rollout");
    to = rollback ? DS::kReverted : DS::kSucceeded;
  } else if (rollback) {
    to = DS::kReverting;  // stays; the error is recorded for the operator
  }
  const std::string error = report.outcome() == v1::OTA_OUTCOME_SUCCESS ? "" : report.error().substr(0, 1024);
  if (Status tx = db->Transaction([&]() -> Status {
        FLT_ASSIGN_OR_RETURN(auto st, db->Prepare("UPDATE rollout_devices SET status = ?, reported_ms = ?, error = ? "
                                                  "WHERE rollout_id = ? AND device_id = ?"));
        return st.Bind(1, ToString(to)).Bind(2, Now()).Bind(3, error).Bind(4, id).Bind(5, env.sender_id).Run();
      });
      !tx.ok()) {
    return tx;
  }
  ++stats.reports_accepted;
  // Judge at once: a crossed error threshold halts before the next Tick could assign.
  return Evaluate(r);
}

// --- public -----------------------------------------------------------------------------------

RolloutManager::RolloutManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RolloutManager::~RolloutManager() = default;

Result<std::unique_ptr<RolloutManager>> RolloutManager::Open(RolloutOptions options, RolloutDeps deps) {
  auto impl = std::make_unique<Impl>();
  if (deps.clock == nullptr) deps.clock = &RealClock();
  if (deps.random == nullptr) deps.random = &OsRandom();
  sqlite::OpenOptions oo;
  oo.synchronous_full = options.synchronous_full;
  FLT_ASSIGN_OR_RETURN(impl->db, sqlite::Database::Open(options.db_path, oo));
  FLT_RETURN_IF_ERROR(impl->db->Migrate(kComponent, kMigrations));
  impl->options = std::move(options);
  impl->deps = deps;
  return std::unique_ptr<RolloutManager>(new RolloutManager(std::move(impl)));
}

Result<RolloutSummary> RolloutManager::Create(const RolloutSpec& requested) {
  FLT_RETURN_IF_ERROR(ValidateRolloutSpec(requested));
  RolloutSpec spec = requested;
  for (auto& p : spec.phases) {
    if (p.name.empty()) p.name = internal::DefaultPhaseName(p);
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& m = *impl_;
  if (m.deps.repository == nullptr) return FailedPreconditionError("rollout create: no repository");
  std::vector<TargetRow> targets;
  for (const auto& name : spec.targets) {
    auto it = m.deps.repository->targets().find(name);
    if (it == m.deps.repository->targets().end())
      return NotFoundError("rollout create: target " + name + " is not published");
    TargetRow t;
    t.name = name;
    t.target = it->second;
    targets.push_back(std::move(t));
  }
  // The previous release of each target: the newest older targets metadata with a
  // different artifact under the same name.
  const uint64_t current = m.deps.repository->targets_version();
  for (uint64_t v = current; v-- > 1;) {
    bool open = false;
    for (const auto& t : targets) open = open || !t.previous;
    if (!open) break;
    auto wire = ReadFileBytes(m.deps.repository->dir() / ota::TargetsMetadataPath(v),
                              ota::MaxMetadataBytes(v1::ROLE_TYPE_TARGETS));
    if (!wire.ok()) continue;
    auto md = ota::ParseTrustedMetadata(*wire, v1::ROLE_TYPE_TARGETS);
    if (!md.ok()) continue;
    for (auto& t : targets) {
      if (t.previous) continue;
      for (const auto& old : md->targets().targets()) {
        if (old.name() == t.name && old.sha256() != t.target.sha256()) t.previous = old;
      }
    }
  }
  // One unfinished rollout per target: a new one supersedes a completed one.
  FLT_ASSIGN_OR_RETURN(std::vector<int64_t> ids, m.Ids(true));
  std::vector<RolloutRow> superseded;
  for (int64_t id : ids) {
    FLT_ASSIGN_OR_RETURN(RolloutRow other, m.Load(id));
    if (other.s.state == RolloutState::kAborted) continue;
    bool overlap = false;
    for (const auto& t : other.targets) {
      overlap = overlap || std::find(spec.targets.begin(), spec.targets.end(), t.name) != spec.targets.end();
    }
    if (!overlap) continue;
    if (other.s.state != RolloutState::kCompleted) {
      return FailedPreconditionError("rollout create: rollout " + std::to_string(id) + " (" + other.s.name +
                                     ") covering the same target is " + std::string(ToString(other.s.state)) +
                                     "; abort or finish it first");
    }
    superseded.push_back(std::move(other));
  }
  const int64_t now = m.Now();
  int64_t id = 0;
  Bytes tag(4);
  m.deps.random->Fill(tag);
  if (Status tx = m.db->Transaction([&]() -> Status {
        FLT_ASSIGN_OR_RETURN(auto st,
                             m.db->Prepare("INSERT INTO rollout_rollouts(name, deployment_id, spec, state, phase, "
                                           "created_ms, updated_ms) VALUES(?, ?, ?, 'active', 0, ?, ?)"));
        // Placeholder deployment id made unique by the random tag, fixed below with the row id.
        FLT_RETURN_IF_ERROR(st.Bind(1, spec.name)
                                .Bind(2, "new-" + ToHex(tag))
                                .Bind(3, internal::SpecToJson(spec).dump())
                                .Bind(4, now)
                                .Bind(5, now)
                                .Run());
        id = m.db->LastInsertRowId();
        FLT_ASSIGN_OR_RETURN(auto dep, m.db->Prepare("UPDATE rollout_rollouts SET deployment_id = ? WHERE id = ?"));
        FLT_RETURN_IF_ERROR(dep.Bind(1, "rollout-" + std::to_string(id) + "-" + ToHex(tag)).Bind(2, id).Run());
        FLT_ASSIGN_OR_RETURN(auto tt, m.db->Prepare("INSERT INTO rollout_targets(rollout_id, name, target, previous) "
                                                    "VALUES(?,?,?,?)"));
        for (const auto& t : targets) {
          tt.Bind(1, id).Bind(2, t.name).BindBlob(3, Serialize(t.target));
          if (t.previous) {
            tt.BindBlob(4, Serialize(*t.previous));
          } else {
            tt.BindNull(4);
          }
          FLT_RETURN_IF_ERROR(tt.Run());
          tt.Reset();
        }
        return m.Event(id, "create", spec.name);
      });
      !tx.ok()) {
    return tx;
  }
  for (auto& other : superseded) {
    FLT_RETURN_IF_ERROR(m.SetState(other, RolloutEvent::kAbort, "superseded by rollout " + std::to_string(id)));
  }
  return m.Summary(id);
}

Result<std::vector<RolloutSummary>> RolloutManager::List() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  FLT_ASSIGN_OR_RETURN(std::vector<int64_t> ids, impl_->Ids(false));
  std::vector<RolloutSummary> out;
  for (int64_t id : ids) {
    FLT_ASSIGN_OR_RETURN(RolloutSummary s, impl_->Summary(id));
    out.push_back(std::move(s));
  }
  return out;
}

Result<RolloutSummary> RolloutManager::Get(int64_t id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Summary(id);
}

Result<std::vector<DeviceStatusRow>> RolloutManager::Devices(int64_t id, std::optional<DeviceRolloutStatus> status,
                                                             size_t limit) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  FLT_RETURN_IF_ERROR(impl_->Load(id).status());
  FLT_ASSIGN_OR_RETURN(
      auto st, impl_->db->Prepare("SELECT device_id, status, canary, phase, assigned_ms, reported_ms, error FROM "
                                  "rollout_devices WHERE rollout_id = ? AND (? = '' OR status = ?) ORDER BY device_id "
                                  "LIMIT ?"));
  const std::string filter = status ? std::string(ToString(*status)) : "";
  st.Bind(1, id).Bind(2, filter).Bind(3, filter).Bind(4, limit == 0 ? int64_t{-1} : static_cast<int64_t>(limit));
  std::vector<DeviceStatusRow> out;
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool more, st.Step());
    if (!more) break;
    DeviceStatusRow r;
    r.device_id = st.ColumnText(0);
    FLT_ASSIGN_OR_RETURN(r.status, ParseDeviceRolloutStatus(st.ColumnText(1)));
    r.canary = st.ColumnInt(2) != 0;
    r.phase = static_cast<int32_t>(st.ColumnInt(3));
    r.assigned_ms = st.ColumnInt(4);
    r.reported_ms = st.ColumnInt(5);
    r.error = st.ColumnText(6);
    out.push_back(std::move(r));
  }
  return out;
}

Status RolloutManager::Pause(int64_t id, std::string reason) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Command(id, RolloutEvent::kPause, reason);
}
Status RolloutManager::Resume(int64_t id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Command(id, RolloutEvent::kResume, "resumed by operator");
}
Status RolloutManager::Abort(int64_t id, std::string reason) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Command(id, RolloutEvent::kAbort, reason);
}
Status RolloutManager::Rollback(int64_t id, std::string reason) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Command(id, RolloutEvent::kRollback, reason);
}

Status RolloutManager::Tick() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->deps.repository == nullptr) return FailedPreconditionError("rollout tick: no repository");
  FLT_ASSIGN_OR_RETURN(std::vector<int64_t> ids, impl_->Ids(false));
  Status first;
  for (int64_t id : ids) {
    Status s = impl_->TickOne(id);
    if (!s.ok()) {
      FLT_LOG(kWarn, "rollout") << "rollout " << id << ": " << s.ToString();
      if (first.ok()) first = s;
    }
  }
  return first;
}

Status RolloutManager::HandleReport(ByteSpan envelope) {
  // Signature checks run outside the lock: they are the expensive part.
  auto env = impl_->OpenReport(envelope);
  std::lock_guard<std::mutex> lock(impl_->mu);
  Status s = env.ok() ? impl_->Report(*env) : env.status();
  if (!s.ok()) ++impl_->stats.reports_rejected;
  return s;
}

void RolloutManager::HandleMessage(const protocol::Message& message) {
  auto topic = protocol::ParseTopic(message.topic);
  if (!topic.ok() || topic->kind != protocol::TopicKind::kEvent ||
      topic->name != protocol::topic_names::kOtaReportEvent) {
    return;
  }
  // The topic's {id} must be the signer (the broker's ACL stops others publishing there).
  auto env = impl_->OpenReport(message.payload);
  Status s = env.ok() ? protocol::CheckTopicBinding(*topic, *env) : env.status();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (s.ok()) s = impl_->Report(*env);
    if (!s.ok()) ++impl_->stats.reports_rejected;
  }
  if (!s.ok()) {
    FLT_LOG(kWarn, "rollout") << "report on " << message.topic << " rejected: " << s.ToString();
  }
}

RolloutStats RolloutManager::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace flotilla::coordinator
