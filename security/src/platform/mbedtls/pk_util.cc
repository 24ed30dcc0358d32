#include "platform/mbedtls/pk_util.h"

#include <mbedtls/ecp.h>

#include "flotilla/security/csprng.h"

namespace flotilla::security::internal {

Status CheckP256(const mbedtls_pk_context* pk, std::string_view what) {
  if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY || mbedtls_pk_ec(*pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
    return InvalidArgumentError(std::string(what) + ": not an EC P-256 key (got " + mbedtls_pk_get_name(pk) + ")");
  }
  return Status::Ok();
}

Status GenerateP256(PkContext& pk) {
  int ret = mbedtls_pk_setup(pk.get(), mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (ret == 0) {
    ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk.get()), RandomCallback,
                              RngArg(SystemCsprng()));
  }
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, "p-256 key generation", ret);
  return Status::Ok();
}

Status ParsePrivateKeyPem(PkContext& pk, std::string_view pem) {
  std::string buf = NulTerminated(pem);
  int ret = mbedtls_pk_parse_key(pk.get(), reinterpret_cast<const unsigned char*>(buf.c_str()), buf.size() + 1,
                                 nullptr, 0);
  Wipe(buf.data(), buf.size());
  if (ret != 0) return MbedTlsStatus(StatusCode::kInvalidArgument, "private key PEM", ret);
  FLT_RETURN_IF_ERROR(CheckP256(pk.get(), "private key PEM"));
  // SEC1 files carry the public point; a mismatched one would sign under a wrong identity.
  const mbedtls_ecp_keypair* ec = mbedtls_pk_ec(*pk.get());
  ret = mbedtls_ecp_check_pub_priv(ec, ec);
  if (ret != 0) return MbedTlsStatus(StatusCode::kInvalidArgument, "private key PEM: public point mismatch", ret);
  return Status::Ok();
}

Result<Bytes> PublicKeyDer(mbedtls_pk_context* pk) {
  unsigned char buf[256];
  int len = mbedtls_pk_write_pubkey_der(pk, buf, sizeof(buf));
  if (len < 0) return MbedTlsStatus(StatusCode::kInternal, "public key DER", len);
  return Bytes(buf + sizeof(buf) - len, buf + sizeof(buf));
}

Result<std::string> PrivateKeyPem(mbedtls_pk_context* pk) {
  unsigned char buf[1024];
  int ret = mbedtls_pk_write_key_pem(pk, buf, sizeof(buf));
  if (ret != 0) {
    Wipe(buf, sizeof(buf));
    return MbedTlsStatus(StatusCode::kInternal, "private key PEM", ret);
  }
  std::string pem(reinterpret_cast<const char*>(buf));
  Wipe(buf, sizeof(buf));
  return pem;
}

Status ParseCertificatesPem(CrtChain& chain, std::string_view pem, std::string_view what) {
  if (pem.find("-----BEGIN CERTIFICATE-----") == std::string_view::npos) {
    return InvalidArgumentError(std::string(what) + ": no PEM certificate found");
  }
  std::string buf = NulTerminated(pem);
  int ret = mbedtls_x509_crt_parse(chain.get(), reinterpret_cast<const unsigned char*>(buf.c_str()), buf.size() + 1);
  // > 0: that many certificates failed to parse; we accept no partial chains.
  if (ret != 0) return MbedTlsStatus(StatusCode::kInvalidArgument, std::string(what), ret);
  return Status::Ok();
}

}  // namespace flotilla::security::internal
