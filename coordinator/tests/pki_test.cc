// `flotilla pki` library: files, permissions, chains to the CA, refusal to clobber.
#include "flotilla/coordinator/pki.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "flotilla/core/file.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/x509.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;

unsigned Mode(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

TEST(PkiTest, InitMakesAFleetWhoseCertificatesChainToTheCa) {
  TempDir dir = Must(TempDir::Create("flotilla-pki"));
  ASSERT_TRUE(InitPki(dir.path()).ok());
  PkiLayout l{dir.path()};
  const std::string ca = Must(ReadFileString(l.ca_cert()));
  for (const auto& [cert, key, cn] : {std::tuple{l.coordinator_cert(), l.coordinator_key(), "coordinator"},
                                      std::tuple{l.broker_cert(), l.broker_key(), "broker"}}) {
    const std::string pem = Must(ReadFileString(cert));
    EXPECT_TRUE(security::VerifyCertificate(ca, pem).ok());
    EXPECT_EQ(Must(security::CertificateCommonName(pem)), cn);
    EXPECT_EQ(Mode(key), 0600u);
    // The key matches the certificate.
    auto priv = Must(security::EcdsaPrivateKey::FromPem(Must(ReadFileString(key))));
    EXPECT_TRUE(priv.public_key() == Must(security::EcdsaPublicKey::FromCertificatePem(pem)));
  }
  EXPECT_EQ(Mode(l.ca_key()), 0600u);
  EXPECT_EQ(InitPki(dir.path()).code(), StatusCode::kAlreadyExists);  // never orphans a fleet
  PkiInitOptions force;
  force.overwrite = true;
  EXPECT_TRUE(InitPki(dir.path(), force).ok());
  EXPECT_NE(Must(ReadFileString(l.ca_cert())), ca);
}

TEST(PkiTest, IssuedDeviceCertificateVerifiesAndCarriesTheId) {
  TempDir dir = Must(TempDir::Create("flotilla-pki"));
  EXPECT_EQ(IssueDeviceCertificate(dir.path(), "dev-1").status().code(), StatusCode::kNotFound);  // no CA yet
  ASSERT_TRUE(InitPki(dir.path()).ok());
  IssuedFiles f = Must(IssueDeviceCertificate(dir.path(), "dev-1"));
  EXPECT_EQ(f.cert, PkiLayout{dir.path()}.device_cert("dev-1"));
  const std::string pem = Must(ReadFileString(f.cert));
  EXPECT_TRUE(security::VerifyCertificate(Must(ReadFileString(PkiLayout{dir.path()}.ca_cert())), pem).ok());
  EXPECT_EQ(Must(security::CertificateCommonName(pem)), "dev-1");
  EXPECT_EQ(Mode(f.key), 0600u);
  EXPECT_EQ(IssueDeviceCertificate(dir.path(), "dev-1").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(IssueDeviceCertificate(dir.path(), "a/b").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueDeviceCertificate(dir.path(), "coordinator").status().code(), StatusCode::kInvalidArgument);
  IssuedFiles elsewhere = Must(IssueDeviceCertificate(dir.path(), "dev-2", dir.path() / "out"));
  EXPECT_EQ(elsewhere.key, dir.path() / "out" / "dev-2.key");
  // A certificate from another fleet does not verify against this CA.
  TempDir other = Must(TempDir::Create("flotilla-pki"));
  ASSERT_TRUE(InitPki(other.path()).ok());
  IssuedFiles foreign = Must(IssueDeviceCertificate(other.path(), "dev-1"));
  EXPECT_FALSE(security::VerifyCertificate(Must(ReadFileString(PkiLayout{dir.path()}.ca_cert())),
                                           Must(ReadFileString(foreign.cert)))
                   .ok());
}

}  // namespace
}  // namespace flotilla::coordinator
