// The SecAgg mask PRG on top of an AesCtrBackend (encoding documented in prg.h).
#include "flotilla/security/prg.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

namespace flotilla::security {

AesCtrCounterBlock PrgCounterBlock(uint64_t block) {
  AesCtrCounterBlock counter{};
  for (int i = 0; i < 8; ++i) counter[15 - i] = static_cast<uint8_t>(block >> (8 * i));
  return counter;
}

Status ExpandPrg(const AesCtrBackend& backend, const PrgSeed& seed, uint64_t word_offset, std::span<uint32_t> out) {
  if (out.empty()) return Status::Ok();
  if (word_offset > kPrgMaxWords || out.size() > kPrgMaxWords - word_offset) {
    return OutOfRangeError("prg: words [" + std::to_string(word_offset) + ", +" + std::to_string(out.size()) +
                           ") exceed the per-seed limit of 2^34 words");
  }
  constexpr uint64_t kWordsPerBlock = kAesBlockSize / sizeof(uint32_t);
  std::span<uint8_t> bytes(reinterpret_cast<uint8_t*>(out.data()), out.size_bytes());
  uint64_t block = word_offset / kWordsPerBlock;
  const size_t skip = static_cast<size_t>(word_offset % kWordsPerBlock) * sizeof(uint32_t);
  if (skip != 0) {  // the range starts inside a block: take its tail
    std::array<uint8_t, kAesBlockSize> first;
    FLT_RETURN_IF_ERROR(backend.Keystream(seed, PrgCounterBlock(block), first));
    const size_t n = std::min(bytes.size(), kAesBlockSize - skip);
    std::memcpy(bytes.data(), first.data() + skip, n);
    bytes = bytes.subspan(n);
    ++block;
  }
  if (!bytes.empty()) FLT_RETURN_IF_ERROR(backend.Keystream(seed, PrgCounterBlock(block), bytes));
  if constexpr (std::endian::native == std::endian::big) {
    for (uint32_t& w : out) w = __builtin_bswap32(w);
  }
  return Status::Ok();
}

Status AddPrgMask(const AesCtrBackend& backend, const PrgSeed& seed, uint64_t word_offset, bool subtract,
                  std::span<uint32_t> acc) {
  // 64 KiB: stays in L2 between expansion and use, and amortizes the per-call key setup.
  constexpr size_t kChunkWords = 16 * 1024;
  std::vector<uint32_t> buf(std::min(acc.size(), kChunkWords));
  for (size_t pos = 0; pos < acc.size();) {
    const size_t n = std::min(acc.size() - pos, kChunkWords);
    const std::span<uint32_t> chunk(buf.data(), n);
    FLT_RETURN_IF_ERROR(ExpandPrg(backend, seed, word_offset + pos, chunk));
    uint32_t* a = acc.data() + pos;
    if (subtract) {
      for (size_t i = 0; i < n; ++i) a[i] -= chunk[i];
    } else {
      for (size_t i = 0; i < n; ++i) a[i] += chunk[i];
    }
    pos += n;
  }
  return Status::Ok();
}

}  // namespace flotilla::security
