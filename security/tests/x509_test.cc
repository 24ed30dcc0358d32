#include "flotilla/security/x509.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>

#include "flotilla/security/identity.h"
#include "test_util.h"

namespace flotilla::security {
namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr ParseWithOpenSsl(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr x(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return x;
}

struct OpenSslCheck {
  int purpose = 0;          // X509_PURPOSE_SSL_SERVER / _CLIENT, 0 = none
  const char* host = nullptr;
  const char* ip = nullptr;
  bool strict = false;      // X509_V_FLAG_X509_STRICT (RFC 5280 profile checks)
};

// What Mosquitto/Paho/cpp-httplib do underneath: X509_verify_cert against a trust store.
// Returns X509_V_OK or the verification error.
int VerifyWithOpenSsl(const std::string& ca_pem, const std::string& cert_pem, const OpenSslCheck& check) {
  X509Ptr ca = ParseWithOpenSsl(ca_pem);
  X509Ptr cert = ParseWithOpenSsl(cert_pem);
  if (!ca || !cert) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert.get(), nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
  if (check.purpose != 0) X509_VERIFY_PARAM_set_purpose(param, check.purpose);
  if (check.host != nullptr) X509_VERIFY_PARAM_set1_host(param, check.host, 0);
  if (check.ip != nullptr) X509_VERIFY_PARAM_set1_ip_asc(param, check.ip);
  if (check.strict) X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  const int ok = X509_verify_cert(ctx);
  const int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -2 : err);
}

std::string ErrorString(int err) { return err < 0 ? "parse failure" : X509_verify_cert_error_string(err); }

class X509Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<CertificateAndKey> ca = CreateCertificateAuthority("Flotilla Test CA");
    FLT_CHECK_OK(ca.status());
    ca_ = new CertificateAndKey(std::move(ca).value());
    CertificateRequest req;
    req.common_name = "broker";
    req.role = CertificateRole::kServer;
    req.dns_names = {"localhost"};
    req.ip_addresses = {"127.0.0.1", "::1"};
    Result<CertificateAndKey> server = IssueCertificate(*ca_, req);
    FLT_CHECK_OK(server.status());
    server_ = new CertificateAndKey(std::move(server).value());
    req = CertificateRequest{};
    req.common_name = "dev-0001";
    req.role = CertificateRole::kClient;
    Result<CertificateAndKey> client = IssueCertificate(*ca_, req);
    FLT_CHECK_OK(client.status());
    client_ = new CertificateAndKey(std::move(client).value());
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete server_;
    delete client_;
  }
  static CertificateAndKey* ca_;
  static CertificateAndKey* server_;
  static CertificateAndKey* client_;
};
CertificateAndKey* X509Test::ca_ = nullptr;
CertificateAndKey* X509Test::server_ = nullptr;
CertificateAndKey* X509Test::client_ = nullptr;

TEST_F(X509Test, MbedTlsVerifiesTheChain) {
  FLT_EXPECT_OK(VerifyCertificate(ca_->cert_pem, server_->cert_pem));
  FLT_EXPECT_OK(VerifyCertificate(ca_->cert_pem, client_->cert_pem));
  FLT_EXPECT_OK(VerifyCertificate(ca_->cert_pem, ca_->cert_pem));
}

TEST_F(X509Test, OpenSslVerifiesServerCertWithPurposeHostAndIp) {
  for (bool strict : {false, true}) {
    SCOPED_TRACE(strict ? "strict" : "default");
    OpenSslCheck check{.purpose = X509_PURPOSE_SSL_SERVER, .host = "localhost", .strict = strict};
    int err = VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem, check);
    EXPECT_EQ(err, X509_V_OK) << ErrorString(err);
    check = OpenSslCheck{.purpose = X509_PURPOSE_SSL_SERVER, .ip = "127.0.0.1", .strict = strict};
    err = VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem, check);
    EXPECT_EQ(err, X509_V_OK) << ErrorString(err);
    check = OpenSslCheck{.purpose = X509_PURPOSE_SSL_SERVER, .ip = "::1", .strict = strict};
    err = VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem, check);
    EXPECT_EQ(err, X509_V_OK) << ErrorString(err);
  }
}

TEST_F(X509Test, OpenSslChecksAreActive) {
  // The same checks must fail where they should, or the passing test above proves nothing.
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem,
                              {.purpose = X509_PURPOSE_SSL_SERVER, .host = "evil.example"}),
            X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem, {.purpose = X509_PURPOSE_SSL_SERVER, .ip = "10.0.0.1"}),
            X509_V_ERR_IP_ADDRESS_MISMATCH);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, client_->cert_pem, {.purpose = X509_PURPOSE_SSL_SERVER}),
            X509_V_ERR_INVALID_PURPOSE);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, server_->cert_pem, {.purpose = X509_PURPOSE_SSL_CLIENT}),
            X509_V_ERR_INVALID_PURPOSE);
}

TEST_F(X509Test, OpenSslVerifiesClientCert) {
  for (bool strict : {false, true}) {
    const int err = VerifyWithOpenSsl(ca_->cert_pem, client_->cert_pem,
                                      {.purpose = X509_PURPOSE_SSL_CLIENT, .strict = strict});
    EXPECT_EQ(err, X509_V_OK) << ErrorString(err);
  }
}

TEST_F(X509Test, CertificateFieldsAsOpenSslSeesThem) {
  X509Ptr ca = ParseWithOpenSsl(ca_->cert_pem);
  X509Ptr server = ParseWithOpenSsl(server_->cert_pem);
  ASSERT_TRUE(ca && server);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_EQ(X509_check_ca(server.get()), 0);
  EXPECT_TRUE(X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN);
  EXPECT_TRUE(X509_get_key_usage(ca.get()) & KU_CRL_SIGN);
  EXPECT_EQ(X509_get_key_usage(server.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(server.get()), static_cast<uint32_t>(XKU_SSL_SERVER));
  X509Ptr client = ParseWithOpenSsl(client_->cert_pem);
  EXPECT_EQ(X509_get_extended_key_usage(client.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_host(server.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(server.get(), "127.0.0.1", 0), 1);
  // 16-byte positive serial.
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(server.get()), nullptr);
  ASSERT_NE(serial, nullptr);
  EXPECT_FALSE(BN_is_negative(serial));
  EXPECT_EQ(BN_num_bytes(serial), 16);
  BN_free(serial);
  // Validity starts (about) now.
  EXPECT_LE(X509_cmp_current_time(X509_get0_notBefore(server.get())), 0);
  EXPECT_GE(X509_cmp_current_time(X509_get0_notAfter(server.get())), 0);
}

TEST_F(X509Test, BothRoleHasBothUsages) {
  CertificateRequest req;
  req.common_name = "coordinator";
  req.role = CertificateRole::kBoth;
  req.dns_names = {"localhost"};
  Result<CertificateAndKey> both = IssueCertificate(*ca_, req);
  FLT_ASSERT_OK(both);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, both->cert_pem, {.purpose = X509_PURPOSE_SSL_SERVER, .host = "localhost"}),
            X509_V_OK);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, both->cert_pem, {.purpose = X509_PURPOSE_SSL_CLIENT}), X509_V_OK);
}

TEST_F(X509Test, CommonNameExtraction) {
  Result<std::string> cn = CertificateCommonName(client_->cert_pem);
  FLT_ASSERT_OK(cn);
  EXPECT_EQ(*cn, "dev-0001");
  cn = CertificateCommonName(ca_->cert_pem);
  FLT_ASSERT_OK(cn);
  EXPECT_EQ(*cn, "Flotilla Test CA");
  EXPECT_EQ(CertificateCommonName("garbage").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(X509Test, CertificateFromAnotherCaFails) {
  Result<CertificateAndKey> other_ca = CreateCertificateAuthority("Flotilla Test CA");  // same name, other key
  FLT_ASSERT_OK(other_ca);
  Result<CertificateAndKey> rogue = IssueCertificate(*other_ca, {.common_name = "dev-0001"});
  FLT_ASSERT_OK(rogue);
  Status s = VerifyCertificate(ca_->cert_pem, rogue->cert_pem);
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << s.ToString();
  EXPECT_NE(VerifyWithOpenSsl(ca_->cert_pem, rogue->cert_pem, {}), X509_V_OK);
  // A leaf is not a CA: nothing chains to it.
  EXPECT_EQ(VerifyCertificate(client_->cert_pem, server_->cert_pem).code(), StatusCode::kUnauthenticated);
}

TEST_F(X509Test, PeerCertificateKeyIsCheckedAgainstCaAndName) {
  // What a hardened-profile device does with a neighbour's advert certificate.
  Result<Bytes> der = CertificateDer(client_->cert_pem);
  FLT_ASSERT_OK(der);
  Result<EcdsaPublicKey> key = VerifiedCertificateKey(ca_->cert_pem, *der, "dev-0001");
  FLT_ASSERT_OK(key);
  Result<EcdsaPrivateKey> priv = EcdsaPrivateKey::FromPem(client_->key_pem);
  FLT_ASSERT_OK(priv);
  EXPECT_EQ(*key, priv->public_key());
  // Another device's name: the coordinator swapped certificates between adverts.
  EXPECT_EQ(VerifiedCertificateKey(ca_->cert_pem, *der, "dev-0002").status().code(), StatusCode::kUnauthenticated);
  // The right name from another CA: a forged identity.
  Result<CertificateAndKey> other_ca = CreateCertificateAuthority("Flotilla Test CA");
  FLT_ASSERT_OK(other_ca);
  Result<CertificateAndKey> rogue = IssueCertificate(*other_ca, {.common_name = "dev-0001"});
  FLT_ASSERT_OK(rogue);
  Result<Bytes> rogue_der = CertificateDer(rogue->cert_pem);
  FLT_ASSERT_OK(rogue_der);
  EXPECT_EQ(VerifiedCertificateKey(ca_->cert_pem, *rogue_der, "dev-0001").status().code(),
            StatusCode::kUnauthenticated);
  // Missing, truncated, oversized.
  EXPECT_EQ(VerifiedCertificateKey(ca_->cert_pem, {}, "dev-0001").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifiedCertificateKey(ca_->cert_pem, ByteSpan(*der).first(der->size() / 2), "dev-0001").status().code(),
            StatusCode::kInvalidArgument);
  Bytes huge(5000, 0x30);
  EXPECT_EQ(VerifiedCertificateKey(ca_->cert_pem, huge, "dev-0001").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(X509Test, KeysMatchCertificates) {
  Result<EcdsaPrivateKey> key = EcdsaPrivateKey::FromPem(client_->key_pem);
  FLT_ASSERT_OK(key);
  Result<EcdsaPublicKey> from_cert = EcdsaPublicKey::FromCertificatePem(client_->cert_pem);
  FLT_ASSERT_OK(from_cert);
  EXPECT_EQ(key->public_key(), *from_cert);
  Result<Bytes> sig = key->Sign(AsBytes("hello"));
  FLT_ASSERT_OK(sig);
  FLT_EXPECT_OK(from_cert->Verify(AsBytes("hello"), *sig));
}

TEST_F(X509Test, RejectsBadRequests) {
  auto code = [&](CertificateRequest req) { return IssueCertificate(*ca_, req).status().code(); };
  EXPECT_EQ(code({.common_name = ""}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "a,O=evil"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = std::string(65, 'a')}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "srv", .role = CertificateRole::kServer}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "srv", .role = CertificateRole::kServer, .ip_addresses = {"300.1.1.1"}}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "srv", .role = CertificateRole::kServer, .dns_names = {"bad_name"}}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "srv", .role = CertificateRole::kServer, .dns_names = {"-x.example"}}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.common_name = "x", .validity = std::chrono::hours(0)}), StatusCode::kInvalidArgument);
  // A leaf certificate is not a CA; a CA key that does not match its certificate.
  EXPECT_EQ(IssueCertificate(*client_, {.common_name = "x"}).status().code(), StatusCode::kInvalidArgument);
  CertificateAndKey mismatched{ca_->cert_pem, client_->key_pem};
  EXPECT_EQ(IssueCertificate(mismatched, {.common_name = "x"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCertificateAuthority("bad\nname").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyCertificate("junk", server_->cert_pem).code(), StatusCode::kInvalidArgument);
}

TEST_F(X509Test, WildcardDnsNameAccepted) {
  Result<CertificateAndKey> w = IssueCertificate(
      *ca_, {.common_name = "edge", .role = CertificateRole::kServer, .dns_names = {"*.fleet.example", "fleet.example"}});
  FLT_ASSERT_OK(w);
  EXPECT_EQ(VerifyWithOpenSsl(ca_->cert_pem, w->cert_pem, {.purpose = X509_PURPOSE_SSL_SERVER, .host = "a.fleet.example"}),
            X509_V_OK);
}

}  // namespace
}  // namespace flotilla::security
