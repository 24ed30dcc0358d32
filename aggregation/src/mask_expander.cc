#include "flotilla/aggregation/mask_expander.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace flotilla::aggregation {
namespace {

// Below this many words per thread, coordinate slices are too short to amortize the
// per-call key schedule; split the streams instead.
constexpr size_t kMinSliceWords = 16 * 1024;

Status RunStreams(const security::AesCtrBackend& backend, std::span<const MaskStream> streams, uint64_t word_offset,
                  std::span<uint32_t> acc) {
  for (const MaskStream& s : streams) {
    FLT_RETURN_IF_ERROR(security::AddPrgMask(backend, s.seed, word_offset, s.subtract, acc));
  }
  return Status::Ok();
}

}  // namespace

Status ApplyMaskStreams(const security::AesCtrBackend& backend, std::span<const MaskStream> streams,
                        std::span<uint32_t> acc, unsigned threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (streams.empty() || acc.empty()) return Status::Ok();
  if (threads == 1) return RunStreams(backend, streams, 0, acc);

  std::vector<Status> results(threads);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  if (acc.size() / threads >= kMinSliceWords) {
    // Slices aligned to whole AES blocks (4 words) so no block is computed twice.
    const size_t per = ((acc.size() / threads) + 3) & ~size_t{3};
    for (unsigned w = 0; w < threads; ++w) {
      const size_t lo = std::min(acc.size(), per * w);
      const size_t hi = w + 1 == threads ? acc.size() : std::min(acc.size(), lo + per);
      workers.emplace_back([&, w, lo, hi] { results[w] = RunStreams(backend, streams, lo, acc.subspan(lo, hi - lo)); });
    }
    for (auto& t : workers) t.join();
  } else {
    std::vector<std::vector<uint32_t>> partial(threads, std::vector<uint32_t>(acc.size(), 0));
    const size_t per = (streams.size() + threads - 1) / threads;
    for (unsigned w = 0; w < threads; ++w) {
      const size_t lo = std::min(streams.size(), per * w);
      const size_t hi = std::min(streams.size(), lo + per);
      workers.emplace_back(
          [&, w, lo, hi] { results[w] = RunStreams(backend, streams.subspan(lo, hi - lo), 0, partial[w]); });
    }
    for (auto& t : workers) t.join();
    for (const Status& s : results) FLT_RETURN_IF_ERROR(s);  // acc untouched on failure
    for (const auto& p : partial) {
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += p[i];
    }
  }
  for (const Status& s : results) FLT_RETURN_IF_ERROR(s);
  return Status::Ok();
}

}  // namespace flotilla::aggregation
