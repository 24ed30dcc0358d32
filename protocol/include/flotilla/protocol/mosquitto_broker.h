// MosquittoBroker: a real `mosquitto` 2.0 child process on free loopback ports with a
// generated configuration, for tests, the demo and the simulator (target flotilla_broker).
//
// Mosquitto 2.0.11 cannot bind port 0, so Start() picks free ports by binding
// 127.0.0.1:0, writes mosquitto.conf (+ acl) into a work dir, runs `mosquitto -c` as a
// child (its open-file limit raised to the hard limit, inherited fds closed), waits until
// the listeners accept TCP connections and retries with new ports on "Address already in
// use" (at most 3 tries). The generated settings and why each is there: docs/transport.md.
//
// Not thread-safe: one owner calls Start/Stop/Restart; accessors are safe to read from
// any thread while no Stop/Restart runs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/core/status.h"

namespace flotilla::protocol {

// The mTLS listener: clients must present a certificate signed by `ca_file`; the
// certificate CN becomes the username and the client id, and the ACL below applies.
struct MosquittoTlsListenerOptions {
  std::filesystem::path ca_file;    // fleet CA certificate (PEM)
  std::filesystem::path cert_file;  // broker certificate (PEM), SAN must cover 127.0.0.1
  std::filesystem::path key_file;   // broker private key (PEM)
  std::string coordinator_username = "coordinator";  // CN with readwrite on fl/v1/#
};

struct MosquittoBrokerOptions {
  // Empty: a fresh temp dir removed by the destructor. Else used as is (kept).
  std::filesystem::path work_dir;
  // Empty: `mosquitto` on PATH, then /usr/sbin/mosquitto.
  std::filesystem::path executable;
  std::optional<MosquittoTlsListenerOptions> tls;  // no TLS listener when empty
  size_t message_size_limit = 131072;  // payload cap (ARCHITECTURE.md §5: hard cap 128 KiB)
  size_t max_packet_size = 262144;     // whole-packet cap; bigger packets = disconnect
  size_t max_queued_messages = 10000;  // per client, while offline or in flight
  std::chrono::milliseconds start_timeout{10000};
  std::chrono::milliseconds stop_timeout{5000};  // SIGTERM → SIGKILL after this
  // Kill the broker if the thread that started it dies (PR_SET_PDEATHSIG), so a crashed
  // test never leaves a broker behind. Turn off when Start() runs on a short-lived thread.
  bool kill_with_parent = true;
  std::vector<std::string> extra_config_lines;  // appended verbatim to mosquitto.conf
};

// The generated files, exposed so their content is unit-tested and documented.
std::string RenderMosquittoConfig(const MosquittoBrokerOptions& options, uint16_t plain_port, uint16_t tls_port,
                                  const std::filesystem::path& log_path, const std::filesystem::path& acl_path);
std::string RenderMosquittoAcl(std::string_view coordinator_username);

class MosquittoBroker {
 public:
  // Starts the broker and returns once every listener accepts connections. Errors:
  // NotFound (no mosquitto binary), Unavailable (it exited or never listened; the
  // message carries the tail of its log), DeadlineExceeded, or file/system errors.
  static Result<std::unique_ptr<MosquittoBroker>> Start(MosquittoBrokerOptions options);

  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;
  // Stops the broker (Stop()) and removes a temp work dir.
  ~MosquittoBroker();

  // SIGTERM, wait up to stop_timeout, then SIGKILL. OK if already stopped.
  Status Stop();
  // Stop() then start again on the SAME ports (clients reconnect to the same URI).
  // Sessions and retained messages are lost (persistence false), as after a crash.
  Status Restart();
  bool running() const { return pid_ > 0; }

  std::string plain_uri() const;  // "tcp://127.0.0.1:PORT"
  std::string tls_uri() const;    // "ssl://127.0.0.1:PORT", empty without TLS
  uint16_t plain_port() const { return plain_port_; }
  uint16_t tls_port() const { return tls_port_; }
  pid_t pid() const { return pid_; }  // -1 when stopped
  const std::filesystem::path& work_dir() const { return work_dir_; }
  std::filesystem::path config_path() const { return work_dir_ / "mosquitto.conf"; }
  std::filesystem::path log_path() const { return work_dir_ / "mosquitto.log"; }
  // The last `max_bytes` of the broker log (for error messages and test diagnostics).
  std::string LogTail(size_t max_bytes = 2048) const;

 private:
  MosquittoBroker(MosquittoBrokerOptions options, std::optional<TempDir> temp, std::filesystem::path work_dir,
                  std::filesystem::path executable);
  // Writes the config for the current ports, spawns, waits for the listeners.
  Status Launch();
  Status WaitListening();

  MosquittoBrokerOptions options_;
  std::optional<TempDir> temp_dir_;  // set when we created the work dir
  std::filesystem::path work_dir_;
  std::filesystem::path executable_;
  uint16_t plain_port_ = 0;
  uint16_t tls_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace flotilla::protocol
