#include "flotilla/core/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace flotilla {
namespace {

class StderrSink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    auto now = std::chrono::system_clock::now();
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[32];
    std::strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    std::fprintf(stderr, "%s.%03lld %-5.*s [%.*s] %.*s\n", ts, static_cast<long long>(ms),
                 static_cast<int>(ToString(level).size()), ToString(level).data(), static_cast<int>(component.size()),
                 component.data(), static_cast<int>(message.size()), message.data());
  }
};

struct LogState {
  std::mutex mu;
  std::shared_ptr<LogSink> sink = std::make_shared<StderrSink>();  // GUARDED_BY(mu)
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: logging works during static teardown
  return *state;
}

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

}  // namespace

std::string_view ToString(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return "trace";
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "?";
}

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  for (int i = 0; i <= static_cast<int>(LogLevel::kOff); ++i) {
    if (ToString(static_cast<LogLevel>(i)) == text) {
      *out = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

void SetLogSink(std::shared_ptr<LogSink> sink) {
  auto& st = State();
  std::lock_guard<std::mutex> lock(st.mu);
  st.sink = sink ? std::move(sink) : std::make_shared<StderrSink>();
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

namespace internal {
LogMessage::~LogMessage() {
  auto& st = State();
  std::string text = stream_.str();
  std::lock_guard<std::mutex> lock(st.mu);
  st.sink->Write(level_, component_, text);
}
}  // namespace internal

}  // namespace flotilla
