// Logging facade. Std-only so every module (and the cross-built engine) can use it; the
// CLI installs a spdlog sink (spdlog_sink.h). Never log secrets, keys or individual
// updates. Thread-safe: sinks are called under a global mutex.
//
//   FLT_LOG(kInfo, "transport") << "connected to " << uri;
#pragma once

#include <memory>
#include <sstream>
#include <string_view>

namespace flotilla {

enum class LogLevel : int { kTrace = 0, kDebug = 1, kInfo = 2, kWarn = 3, kError = 4, kOff = 5 };

std::string_view ToString(LogLevel level);
// Parses "trace|debug|info|warn|error|off"; returns false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* out);

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Write(LogLevel level, std::string_view component, std::string_view message) = 0;
};

// Replaces the process-wide sink (nullptr restores the default stderr sink).
void SetLogSink(std::shared_ptr<LogSink> sink);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
inline bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= static_cast<int>(GetLogLevel()); }

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, std::string_view component) : level_(level), component_(component) {}
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::string_view component_;
  std::ostringstream stream_;
};
}  // namespace internal
}  // namespace flotilla

#define FLT_LOG(level, component)                                     \
  if (!::flotilla::LogEnabled(::flotilla::LogLevel::level)) {         \
  } else                                                              \
    ::flotilla::internal::LogMessage(::flotilla::LogLevel::level, (component)).stream()
