// flotilla: the one executable. Thin: parses flags and calls the libraries.
#include <algorithm>
#include <iostream>

#include "command_registry.h"
#include "flotilla/core/log.h"
#include "flotilla/core/spdlog_sink.h"

namespace flotilla::cli {

std::vector<CommandEntry>& Commands() {
  static std::vector<CommandEntry> commands;
  return commands;
}

int& ExitCode() {
  static int code = 0;
  return code;
}

}  // namespace flotilla::cli

int main(int argc, char** argv) {
  CLI::App app{"flotilla: federated learning and OTA fleet management for edge GenAI devices"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "flotilla 0.1.0");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  app.parse_complete_callback([&] {
    flotilla::InstallSpdlogSink();
    flotilla::LogLevel level;
    if (!flotilla::ParseLogLevel(log_level, &level)) throw CLI::ValidationError("--log-level", "unknown level");
    flotilla::SetLogLevel(level);
  });

  auto& commands = flotilla::cli::Commands();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& c : commands) c.registrar(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return flotilla::cli::ExitCode();
}
