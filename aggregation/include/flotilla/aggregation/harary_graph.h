// The SecAgg+ communication graph: a random Harary graph H(n, k) — clients placed on a
// ring in a pseudorandom order derived from the round's graph seed, each linked to the
// k/2 ring positions on either side — or the complete graph (k = n - 1).
//
// Order, exactly: prg_seed = HKDF-SHA256(salt = "", ikm = graph_seed,
// info = "flotilla/v1/secagg/graph", 16 bytes); words w_0, w_1, ... of the mask PRG
// (prg.h) drive a Fisher-Yates shuffle of [1..n] (for i = n-1 down to 1, j uniform in
// [0, i] by rejection sampling on 32-bit words), giving ring position -> index.
// Everyone (server and each client) derives the same graph from (n, k, graph_seed).
// Immutable after construction; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::aggregation {

class SecAggGraph {
 public:
  // Cohort indices are 1..n. InvalidArgument unless n >= 2 and k = n - 1 or k even in
  // [2, n - 2]; an empty graph seed is refused for the Harary case.
  static Result<SecAggGraph> Create(uint32_t n, uint32_t k, ByteSpan graph_seed);

  uint32_t n() const { return n_; }
  uint32_t k() const { return k_; }
  bool complete() const { return k_ + 1 == n_; }

  // N(index), sorted ascending; empty for an index outside [1, n].
  std::vector<uint32_t> Neighbours(uint32_t index) const;
  bool AreNeighbours(uint32_t a, uint32_t b) const;

 private:
  SecAggGraph(uint32_t n, uint32_t k) : n_(n), k_(k) {}
  uint32_t n_;
  uint32_t k_;
  std::vector<uint32_t> ring_;      // position -> index (empty for the complete graph)
  std::vector<uint32_t> position_;  // index -> position (position_[0] unused)
};

}  // namespace flotilla::aggregation
