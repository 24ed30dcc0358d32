// `flotilla pki init|issue`: the fleet CA and the coordinator, broker and device
// certificates (flotilla_coordinator pki.h on flotilla_security's X.509; no openssl CLI).
// Revocation is not a PKI operation here: it lives in the coordinator's store
// (`flotilla coordinator device revoke ID` or POST /api/v1/devices/{id}/revoke).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command_registry.h"
#include "flotilla/coordinator/pki.h"

namespace flotilla::cli {
namespace {

struct PkiOptions {
  std::string dir;
  std::string device;
  std::string out_dir;
  std::vector<std::string> dns = {"localhost"};
  std::vector<std::string> ips = {"127.0.0.1", "::1"};
  int days = 825;
  bool force = false;
};

int Report(const Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

CommandRegistration pki_registration("pki", [](CLI::App& root) {
  auto o = std::make_shared<PkiOptions>();
  CLI::App* pki = root.add_subcommand("pki", "Fleet PKI: CA, coordinator, broker and device certificates");
  pki->require_subcommand(1);

  CLI::App* init = pki->add_subcommand("init", "Create the fleet CA and the coordinator and broker certificates");
  init->add_option("--dir", o->dir, "PKI directory")->required();
  init->add_option("--dns", o->dns, "DNS names for the server certificates")->capture_default_str();
  init->add_option("--ip", o->ips, "IP addresses for the server certificates")->capture_default_str();
  init->add_option("--days", o->days, "Validity of the leaf certificates")->check(CLI::Range(1, 3650))->capture_default_str();
  init->add_flag("--force", o->force, "Replace an existing CA (every issued certificate becomes useless)");
  init->callback([o] {
    coordinator::PkiInitOptions io;
    io.dns_names = o->dns;
    io.ip_addresses = o->ips;
    io.validity = std::chrono::hours(24 * o->days);
    io.overwrite = o->force;
    Status s = coordinator::InitPki(o->dir, io);
    if (s.ok()) {
      const coordinator::PkiLayout l{o->dir};
      std::printf("fleet CA:    %s (key %s, 0600: keep it offline)\ncoordinator: %s\nbroker:      %s\n",
                  l.ca_cert().c_str(), l.ca_key().c_str(), l.coordinator_cert().c_str(), l.broker_cert().c_str());
    }
    ExitCode() = Report(s);
  });

  CLI::App* issue = pki->add_subcommand("issue", "Issue a device certificate (CN = device id) signed by the fleet CA");
  issue->add_option("--dir", o->dir, "PKI directory (with ca.crt and ca.key)")->required();
  issue->add_option("--device", o->device, "Device id: 1-64 of [A-Za-z0-9._-]")->required();
  issue->add_option("--out-dir", o->out_dir, "Where to write <id>.crt and <id>.key (default: <dir>/devices)");
  issue->add_option("--days", o->days, "Validity")->check(CLI::Range(1, 3650))->capture_default_str();
  issue->add_flag("--force", o->force, "Overwrite an existing certificate for this id");
  issue->callback([o] {
    auto files = coordinator::IssueDeviceCertificate(o->dir, o->device, o->out_dir, std::chrono::hours(24 * o->days),
                                                     o->force);
    if (files.ok()) std::printf("certificate: %s\nkey:         %s\n", files->cert.c_str(), files->key.c_str());
    ExitCode() = Report(files.status());
  });
});

}  // namespace
}  // namespace flotilla::cli
