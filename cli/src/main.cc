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
  // Top-level groups first (sorted, so --help lists them in order), then "parent.child"
  // registrations into their parent.
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) {
    const bool a_child = a.name.find('.') != std::string::npos;
    const bool b_child = b.name.find('.') != std::string::npos;
    return a_child != b_child ? b_child : a.name < b.name;
  });
  for (auto& c : commands) {
    const size_t dot = c.name.find('.');
    if (dot == std::string::npos) {
      c.registrar(app);
      continue;
    }
    try {
      c.registrar(*app.get_subcommand(c.name.substr(0, dot)));
    } catch (const CLI::OptionNotFound&) {
      std::cerr << "internal error: command " << c.name << " has no parent group\n";
      return 70;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return flotilla::cli::ExitCode();
}
