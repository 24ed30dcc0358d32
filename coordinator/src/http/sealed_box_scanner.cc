#include "flotilla/coordinator/sealed_box_scanner.h"

namespace flotilla::coordinator {
namespace {
constexpr uint32_t kWireVarint = 0, kWireFixed64 = 1, kWireLength = 2, kWireFixed32 = 5;
}  // namespace

Status SealedBoxScanner::Fail(std::string what) {
  state_ = State::kFailed;
  error_ = InvalidArgumentError("upload: not a SealedBox: " + what + " at byte " + std::to_string(offset_));
  return error_;
}

Status SealedBoxScanner::Feed(ByteSpan chunk) {
  for (size_t i = 0; i < chunk.size();) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kTag:
      case State::kLength:
      case State::kSkipVarint: {
        const uint8_t b = chunk[i++];
        ++offset_;
        if (varint_shift_ >= 64 || (varint_shift_ == 63 && (b & 0x7e) != 0)) return Fail("varint too long");
        varint_ |= static_cast<uint64_t>(b & 0x7f) << varint_shift_;
        varint_shift_ += 7;
        if (b & 0x80) break;
        const uint64_t v = varint_;
        varint_ = 0;
        varint_shift_ = 0;
        if (state_ == State::kSkipVarint) {
          state_ = State::kTag;
        } else if (state_ == State::kTag) {
          const uint64_t field = v >> 3;
          const uint32_t wire = static_cast<uint32_t>(v & 7);
          if (field == 0 || field > 536870911) return Fail("bad field number");
          field_ = static_cast<uint32_t>(field);
          const bool known = field_ >= 1 && field_ <= 3;
          if (known && wire != kWireLength) return Fail("field " + std::to_string(field_) + " is not bytes");
          if (wire == kWireVarint) {
            state_ = State::kSkipVarint;
          } else if (wire == kWireFixed64 || wire == kWireFixed32) {
            remaining_ = wire == kWireFixed64 ? 8 : 4;
            state_ = State::kSkipBytes;
          } else if (wire == kWireLength) {
            state_ = State::kLength;
          } else {
            return Fail("unsupported wire type " + std::to_string(wire));  // groups (3, 4) and 6, 7
          }
        } else {  // kLength
          if (v > (uint64_t{1} << 31)) return Fail("field length over 2 GiB");
          remaining_ = v;
          if (field_ >= 1 && field_ <= 3) {
            // proto3 "last one wins" for repeated scalar fields: keep the last length.
            field_len_[field_] = v;
            seen_[field_] = true;
          }
          state_ = remaining_ == 0 ? State::kTag : State::kSkipBytes;
        }
        break;
      }
      case State::kSkipBytes:
      case State::kField: {
        const uint64_t n = std::min<uint64_t>(remaining_, chunk.size() - i);
        i += static_cast<size_t>(n);
        offset_ += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kTag;
        break;
      }
    }
  }
  return state_ == State::kFailed ? error_ : Status::Ok();
}

Status SealedBoxScanner::Finish() {
  if (state_ == State::kFailed) return error_;
  if (state_ != State::kTag || varint_shift_ != 0) return Fail("truncated");
  if (!seen_[1] || field_len_[1] != kSealedBoxKeyBytes) return Fail("ephemeral key is not 32 bytes");
  if (!seen_[2] || field_len_[2] != kSealedBoxNonceBytes) return Fail("nonce is not 12 bytes");
  if (!seen_[3] || field_len_[3] < kSealedBoxTagBytes) return Fail("ciphertext shorter than its 16-byte tag");
  return Status::Ok();
}

}  // namespace flotilla::coordinator
