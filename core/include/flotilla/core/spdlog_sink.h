// Routes the Flotilla log facade to spdlog (colour console). Link flotilla_core_spdlog.
#pragma once

namespace flotilla {
// Installs a spdlog stderr sink as the process-wide log sink. Thread-safe, idempotent.
void InstallSpdlogSink();
}  // namespace flotilla
