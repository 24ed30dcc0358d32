// The agent's durable state in <data_dir>/agent.db: the current global adapter and the
// device's participation in rounds. Owner thread only (one SQLite connection).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/core/status.h"

namespace flotilla::device {

struct StoredAdapter {
  std::string version;
  Bytes sha256;
  std::vector<float> values;
};

struct StoredRound {
  std::string round_id;
  std::string state;  // see kRoundStates in agent_store.cc
  uint32_t cohort_index = 0;
  std::string detail;
  int64_t updated_ms = 0;
};

class AgentStore {
 public:
  static Result<std::unique_ptr<AgentStore>> Open(const std::filesystem::path& path);

  Result<std::optional<StoredAdapter>> LoadAdapter();
  // Replaces the current adapter (one transaction).
  Status SaveAdapter(const StoredAdapter& adapter, int64_t now_ms);

  Result<std::optional<StoredRound>> GetRound(std::string_view round_id);
  Status PutRound(const StoredRound& round);
  // Marks every round not in a final state as "abandoned" with `detail`; returns how many.
  Result<int64_t> AbandonUnfinished(std::string_view detail, int64_t now_ms);
  Result<uint64_t> CountRounds(std::string_view state);

  Result<std::optional<std::string>> GetValue(std::string_view key);
  Status SetValue(std::string_view key, std::string_view value);

 private:
  explicit AgentStore(std::unique_ptr<sqlite::Database> db) : db_(std::move(db)) {}
  std::unique_ptr<sqlite::Database> db_;
};

}  // namespace flotilla::device
