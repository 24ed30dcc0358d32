#include "flotilla/core/spdlog_sink.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "flotilla/core/log.h"

namespace flotilla {
namespace {

class SpdlogSink final : public LogSink {
 public:
  SpdlogSink() : logger_(spdlog::stderr_color_mt("flotilla")) {
    logger_->set_pattern("%H:%M:%S.%e %^%-5l%$ [%v");
    logger_->set_level(spdlog::level::trace);  // the facade filters
  }
  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    logger_->log(ToSpd(level), "{}] {}", component, message);
  }

 private:
  static spdlog::level::level_enum ToSpd(LogLevel l) {
    switch (l) {
      case LogLevel::kTrace: return spdlog::level::trace;
      case LogLevel::kDebug: return spdlog::level::debug;
      case LogLevel::kInfo: return spdlog::level::info;
      case LogLevel::kWarn: return spdlog::level::warn;
      case LogLevel::kError: return spdlog::level::err;
      case LogLevel::kOff: return spdlog::level::off;
    }
    return spdlog::level::info;
  }
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace

void InstallSpdlogSink() {
  static std::shared_ptr<SpdlogSink> sink = std::make_shared<SpdlogSink>();
  SetLogSink(sink);
}

}  // namespace flotilla
