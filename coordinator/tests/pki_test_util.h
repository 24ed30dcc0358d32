// A real fleet PKI in a temp dir and signed EnrolmentRequest envelopes for enrolment
// and endpoint tests.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "flotilla/coordinator/pki.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/file.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/version.h"
#include "flotilla/security/csprng.h"
#include "flotilla/security/identity.h"
#include "store_test_util.h"

namespace flotilla::coordinator::testutil {

struct TestDevice {
  std::string id;
  std::string cert_pem;
  std::shared_ptr<const security::EcdsaPrivateKey> key;
  std::unique_ptr<security::EcdsaSigner> signer;
};

class TestFleet {
 public:
  TestFleet() : dir_(Must(TempDir::Create("flotilla-fleet"))) {
    if (!InitPki(dir_.path()).ok()) std::abort();
    ca_pem_ = Must(ReadFileString(PkiLayout{dir_.path()}.ca_cert()));
    auto ck = Must(security::EcdsaPrivateKey::FromPem(Must(ReadFileString(PkiLayout{dir_.path()}.coordinator_key()))));
    coordinator_key_ = std::make_shared<const security::EcdsaPrivateKey>(std::move(ck));
    coordinator_signer_ = std::make_unique<security::EcdsaSigner>("coordinator", coordinator_key_);
  }

  const std::string& ca_pem() const { return ca_pem_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  const security::EcdsaSigner& coordinator_signer() const { return *coordinator_signer_; }
  const security::EcdsaPublicKey& coordinator_public_key() const { return coordinator_key_->public_key(); }

  TestDevice& Device(const std::string& id) {
    auto it = devices_.find(id);
    if (it != devices_.end()) return it->second;
    IssuedFiles f = Must(IssueDeviceCertificate(dir_.path(), id));
    TestDevice d;
    d.id = id;
    d.cert_pem = Must(ReadFileString(f.cert));
    auto key = Must(security::EcdsaPrivateKey::FromPem(Must(ReadFileString(f.key))));
    d.key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
    d.signer = std::make_unique<security::EcdsaSigner>(id, d.key);
    return devices_.emplace(id, std::move(d)).first->second;
  }

  // An EnrolmentRequest for `d` carrying its certificate and key.
  static v1::EnrolmentRequest RequestFor(const TestDevice& d) {
    v1::EnrolmentRequest r;
    r.set_device_id(d.id);
    r.set_certificate_pem(d.cert_pem);
    const Bytes& der = d.key->public_key().der();
    r.set_identity_public_key(std::string(der.begin(), der.end()));
    r.set_firmware_version("fw-1");
    r.mutable_hardware()->set_model("raspberrypi-5");
    return r;
  }

  template <typename Msg>
  static Bytes Seal(const protocol::Signer& signer, const Msg& msg, const Clock& clock,
                    std::string_view recipient = protocol::kCoordinatorId) {
    return Must(protocol::SealMessage(signer, msg, recipient, clock, security::SystemCsprng()));
  }

 private:
  TempDir dir_;
  std::string ca_pem_;
  std::shared_ptr<const security::EcdsaPrivateKey> coordinator_key_;
  std::unique_ptr<security::EcdsaSigner> coordinator_signer_;
  std::map<std::string, TestDevice> devices_;
};

}  // namespace flotilla::coordinator::testutil
