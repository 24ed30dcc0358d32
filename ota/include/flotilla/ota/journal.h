// The device's OTA journal: one SQLite file (WAL, synchronous=FULL) holding the in-flight
// update record, the trusted metadata state and an append-only step history. Every
// Save() is one transaction that is durable when it returns.
//
// Crash-point hook: called with a named point before and after every journal write and
// every fsync/rename the client performs ("journal:DOWNLOAD:before", "fsync:part:after",
// ...), so tests can kill the process there and simulate power loss. Not thread-safe.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "flotilla/core/status.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

using CrashHook = std::function<void(std::string_view point)>;

class Journal {
 public:
  static constexpr int kSchemaVersion = 1;
  // Opens or creates the database. DataLoss if it is not a journal of this schema.
  static Result<std::unique_ptr<Journal>> Open(const std::filesystem::path& path, CrashHook hook = nullptr);
  ~Journal();

  // The in-flight record (state IDLE and empty when nothing was ever saved).
  Result<v1::OtaJournalRecord> Load();
  // Durably replaces the record and appends `step` to the history.
  Status Save(const v1::OtaJournalRecord& record, std::string_view step);
  // Trusted metadata state; NotFound before the first save.
  Result<v1::OtaTrustedState> LoadTrusted();
  Status SaveTrusted(const v1::OtaTrustedState& state);
  // Most recent history steps, oldest first (diagnostics and tests).
  Result<std::vector<std::string>> History(int limit = 1000);

 private:
  struct Impl;
  explicit Journal(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::ota
