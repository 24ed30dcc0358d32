// Bulk mask expansion for the coordinator: acc += sum of (+/-) PRG streams, spread over
// worker threads. Each stream is the mask PRG of prg.h from word 0. Results are identical
// for any thread count and backend (mod 2^32 addition commutes), which the tests check
// against a single-threaded mbedTLS reference.
#pragma once

#include <cstdint>
#include <span>

#include "flotilla/core/status.h"
#include "flotilla/security/prg.h"

namespace flotilla::aggregation {

struct MaskStream {
  security::PrgSeed seed{};
  bool subtract = false;
};

// acc[i] (+/-)= word i of every stream, mod 2^32. `threads` workers (0 = hardware
// concurrency); long vectors are split into coordinate ranges (no extra memory), short
// ones split the streams over per-thread accumulators (threads * acc.size() words).
// Errors from the backend are returned after all workers stop. Thread-safe (no shared
// state besides `acc`, which the caller must not touch meanwhile).
Status ApplyMaskStreams(const security::AesCtrBackend& backend, std::span<const MaskStream> streams,
                        std::span<uint32_t> acc, unsigned threads);

}  // namespace flotilla::aggregation
