// Subcommands register themselves here, one file per command group, so adding a command
// never edits main.cc:
//
//   static flotilla::cli::CommandRegistration reg("model", [](CLI::App& root) { ... });
//
// A group may also grow from several files: a registration named "parent.child" gets
// the parent's CLI::App (registered first) instead of the root, e.g.
//
//   static flotilla::cli::CommandRegistration reg("model.merge", [](CLI::App& model) { ... });
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace flotilla::cli {

using CommandRegistrar = std::function<void(CLI::App& root)>;

struct CommandEntry {
  std::string name;
  CommandRegistrar registrar;
};

std::vector<CommandEntry>& Commands();

struct CommandRegistration {
  CommandRegistration(std::string name, CommandRegistrar registrar) {
    Commands().push_back({std::move(name), std::move(registrar)});
  }
};

// Exit code a command sets for main() to return (commands run inside CLI11 callbacks).
int& ExitCode();

}  // namespace flotilla::cli
