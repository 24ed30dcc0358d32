// Internal: P-256 key and certificate helpers shared by identity.cc and x509.cc.
#pragma once

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "platform/mbedtls/mbedtls_util.h"

namespace flotilla::security::internal {

using PkContext = Scoped<mbedtls_pk_context, mbedtls_pk_init, mbedtls_pk_free>;
using CrtChain = Scoped<mbedtls_x509_crt, mbedtls_x509_crt_init, mbedtls_x509_crt_free>;

// InvalidArgument unless `pk` is an EC key on P-256 (`what` names it in the message).
Status CheckP256(const mbedtls_pk_context* pk, std::string_view what);
// A fresh P-256 key from SystemCsprng().
Status GenerateP256(PkContext& pk);
// Unencrypted SEC1 or PKCS#8 PEM; checks P-256 and that the public half matches.
Status ParsePrivateKeyPem(PkContext& pk, std::string_view pem);
// SubjectPublicKeyInfo DER of `pk`.
Result<Bytes> PublicKeyDer(mbedtls_pk_context* pk);
// SEC1 "EC PRIVATE KEY" PEM of `pk` (a secret).
Result<std::string> PrivateKeyPem(mbedtls_pk_context* pk);
// Parses one or more PEM certificates; InvalidArgument naming `what` on failure.
Status ParseCertificatesPem(CrtChain& chain, std::string_view pem, std::string_view what);

}  // namespace flotilla::security::internal
