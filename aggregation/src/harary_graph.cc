#include "flotilla/aggregation/harary_graph.h"

#include <algorithm>
#include <string>

#include "flotilla/security/hash.h"
#include "flotilla/security/prg.h"

namespace flotilla::aggregation {
namespace {

// Sequential reader of 32-bit PRG words, refilled a block of words at a time.
class WordStream {
 public:
  explicit WordStream(const security::PrgSeed& seed) : seed_(seed) {}
  Result<uint32_t> Next() {
    if (pos_ == buf_.size()) {
      buf_.resize(1024);
      FLT_RETURN_IF_ERROR(security::ExpandPrg(security::MbedTlsAesCtr(), seed_, offset_, buf_));
      offset_ += buf_.size();
      pos_ = 0;
    }
    return buf_[pos_++];
  }

 private:
  security::PrgSeed seed_;
  std::vector<uint32_t> buf_;
  size_t pos_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace

Result<SecAggGraph> SecAggGraph::Create(uint32_t n, uint32_t k, ByteSpan graph_seed) {
  if (n < 2) return InvalidArgumentError("graph: n=" + std::to_string(n) + " < 2");
  SecAggGraph graph(n, k);
  if (k + 1 == n) return graph;
  if (k < 2 || k % 2 != 0 || k + 2 > n) {
    return InvalidArgumentError("graph: degree k=" + std::to_string(k) + " must be n-1 or even in [2, n-2] (n=" +
                                std::to_string(n) + ")");
  }
  if (graph_seed.empty()) return InvalidArgumentError("graph: empty graph seed");
  FLT_ASSIGN_OR_RETURN(Bytes okm, security::Hkdf({}, graph_seed, AsBytes("flotilla/v1/secagg/graph"),
                                                 security::kPrgSeedSize));
  security::PrgSeed seed;
  std::copy(okm.begin(), okm.end(), seed.begin());
  WordStream words(seed);
  graph.ring_.resize(n);
  for (uint32_t i = 0; i < n; ++i) graph.ring_[i] = i + 1;
  for (uint32_t i = n - 1; i >= 1; --i) {
    // Uniform j in [0, i]: reject the top partial range of 2^32.
    const uint64_t range = uint64_t{i} + 1;
    const uint64_t limit = (uint64_t{1} << 32) - ((uint64_t{1} << 32) % range);
    uint64_t w;
    do {
      FLT_ASSIGN_OR_RETURN(uint32_t word, words.Next());
      w = word;
    } while (w >= limit);
    std::swap(graph.ring_[i], graph.ring_[static_cast<uint32_t>(w % range)]);
  }
  graph.position_.assign(n + 1, 0);
  for (uint32_t p = 0; p < n; ++p) graph.position_[graph.ring_[p]] = p;
  return graph;
}

std::vector<uint32_t> SecAggGraph::Neighbours(uint32_t index) const {
  std::vector<uint32_t> out;
  if (index < 1 || index > n_) return out;
  out.reserve(k_);
  if (complete()) {
    for (uint32_t v = 1; v <= n_; ++v) {
      if (v != index) out.push_back(v);
    }
    return out;
  }
  const uint32_t p = position_[index];
  for (uint32_t d = 1; d <= k_ / 2; ++d) {
    out.push_back(ring_[(p + d) % n_]);
    out.push_back(ring_[(p + n_ - d) % n_]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool SecAggGraph::AreNeighbours(uint32_t a, uint32_t b) const {
  if (a < 1 || a > n_ || b < 1 || b > n_ || a == b) return false;
  if (complete()) return true;
  const uint32_t pa = position_[a], pb = position_[b];
  const uint32_t d = pa > pb ? pa - pb : pb - pa;
  return std::min(d, n_ - d) <= k_ / 2;
}

}  // namespace flotilla::aggregation
