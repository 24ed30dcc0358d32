// Streaming check that an upload body is a serialized flotilla.v1.SealedBox
// (round.proto) with the sizes the box format needs, without holding the body in memory:
// uploads of masked updates can be many megabytes and arrive in chunks.
//
// It walks the protobuf wire format byte by byte: varint tags, length-delimited fields
// (ciphertext bytes are counted and skipped), unknown fields skipped by wire type. The
// verdict agrees with protobuf's own parser plus the field checks
// (SealedBoxScannerAgreesWithProtobuf test and the fuzzer check that).
//
// Not thread-safe: one scanner per upload.
#pragma once

#include <cstdint>
#include <string>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

inline constexpr size_t kSealedBoxKeyBytes = 32;
inline constexpr size_t kSealedBoxNonceBytes = 12;
inline constexpr size_t kSealedBoxTagBytes = 16;

class SealedBoxScanner {
 public:
  // Consumes the next chunk. After the first error every call returns it again.
  Status Feed(ByteSpan chunk);
  // OK if the whole body was one SealedBox with a 32-byte ephemeral key, a 12-byte nonce
  // and a ciphertext of at least the 16-byte tag; InvalidArgument saying what and at
  // which offset otherwise.
  Status Finish();

  uint64_t ciphertext_bytes() const { return field_len_[3]; }

 private:
  enum class State : uint8_t { kTag, kLength, kSkipVarint, kSkipBytes, kField, kFailed };
  Status Fail(std::string what);

  State state_ = State::kTag;
  uint64_t offset_ = 0;
  uint64_t varint_ = 0;
  int varint_shift_ = 0;
  uint32_t field_ = 0;      // field number being read
  uint64_t remaining_ = 0;  // bytes left in the current length-delimited field / skip
  uint64_t field_len_[4] = {0, 0, 0, 0};  // last seen length of fields 1..3
  bool seen_[4] = {false, false, false, false};
  Status error_;
};

}  // namespace flotilla::coordinator
