// X25519 on mbedTLS's Curve25519 (Montgomery ladder, mbedtls_ecp_mul). Encoding and
// clamping follow RFC 7748 section 5 and are done here explicitly, so the result does
// not depend on how a given mbedTLS release treats Montgomery key bytes.
#include "flotilla/security/x25519.h"

#include <mbedtls/bignum.h>
#include <mbedtls/ecp.h>

#include "platform/mbedtls/mbedtls_util.h"

namespace flotilla::security {
namespace {

using Group = internal::Scoped<mbedtls_ecp_group, mbedtls_ecp_group_init, mbedtls_ecp_group_free>;
using Point = internal::Scoped<mbedtls_ecp_point, mbedtls_ecp_point_init, mbedtls_ecp_point_free>;
using Mpi = internal::Scoped<mbedtls_mpi, mbedtls_mpi_init, mbedtls_mpi_free>;

// k = clamp(decodeScalar25519(private_key)), wiping the temporary copy.
int LoadScalar(const X25519Key& private_key, Mpi& k) {
  X25519Key clamped = private_key;
  clamped[0] &= 248;
  clamped[31] &= 127;
  clamped[31] |= 64;
  int ret = mbedtls_mpi_read_binary_le(k.get(), clamped.data(), clamped.size());
  internal::Wipe(clamped.data(), clamped.size());
  return ret;
}

// R = k * P; returns the little-endian u coordinate of R.
Result<X25519Key> Multiply(const X25519Key& private_key, const mbedtls_ecp_point* base, Group& grp) {
  Mpi k;
  Point r;
  int ret = LoadScalar(private_key, k);
  if (ret == 0) ret = mbedtls_ecp_mul(grp.get(), r.get(), k.get(), base, internal::RandomCallback,
                                      internal::RngArg(SystemCsprng()));
  if (ret == MBEDTLS_ERR_ECP_INVALID_KEY) {
    return InvalidArgumentError("x25519: peer public key rejected (low-order or invalid point)");
  }
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "x25519", ret);
  X25519Key out;
  ret = mbedtls_mpi_write_binary_le(&r.get()->X, out.data(), out.size());
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "x25519 encode", ret);
  return out;
}

Status LoadGroup(Group& grp) {
  int ret = mbedtls_ecp_group_load(grp.get(), MBEDTLS_ECP_DP_CURVE25519);
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "x25519 group", ret);
  return Status::Ok();
}

}  // namespace

Result<X25519KeyPair> X25519GenerateKeyPair(Random& rng) {
  X25519KeyPair pair;
  rng.Fill(pair.private_key);
  FLT_ASSIGN_OR_RETURN(pair.public_key, X25519PublicFromPrivate(pair.private_key));
  return pair;
}

Result<X25519Key> X25519PublicFromPrivate(const X25519Key& private_key) {
  Group grp;
  FLT_RETURN_IF_ERROR(LoadGroup(grp));
  return Multiply(private_key, &grp.get()->G, grp);
}

Result<X25519Key> X25519Agree(const X25519Key& private_key, const X25519Key& peer_public) {
  Group grp;
  FLT_RETURN_IF_ERROR(LoadGroup(grp));
  // decodeUCoordinate: mask the top bit, then reduce a non-canonical u (>= p) mod p.
  X25519Key u = peer_public;
  u[31] &= 127;
  Point peer;
  int ret = mbedtls_mpi_read_binary_le(&peer.get()->X, u.data(), u.size());
  if (ret == 0) ret = mbedtls_mpi_mod_mpi(&peer.get()->X, &peer.get()->X, &grp.get()->P);
  if (ret == 0) ret = mbedtls_mpi_lset(&peer.get()->Z, 1);
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "x25519 decode", ret);
  FLT_ASSIGN_OR_RETURN(X25519Key shared, Multiply(private_key, peer.get(), grp));
  uint8_t any = 0;  // constant-time all-zero test
  for (uint8_t b : shared) any |= b;
  if (any == 0) {
    return InvalidArgumentError("x25519: all-zero shared secret (peer public key is a low-order point)");
  }
  return shared;
}

}  // namespace flotilla::security
