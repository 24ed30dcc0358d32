// libFuzzer target for the coordinator's decoders of untrusted bytes:
//   - PeekEnrolmentRequest (the only envelope read before its signature is checked),
//   - SealedBoxScanner (HTTP upload bodies), differentially against protobuf's parser:
//     whatever the scanner accepts, protobuf must parse with the same field sizes, and
//     the verdict must not depend on how the body is split into chunks.
// Built as coordinator_upload_fuzzer with FLOTILLA_FUZZ=ON; coordinator_test runs it on
// seeded mutations in every build.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "flotilla/coordinator/enrolment.h"
#include "flotilla/coordinator/sealed_box_scanner.h"
#include "flotilla/v1/round.pb.h"

namespace {

void Expect(bool cond) {
  if (!cond) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flotilla;
  const ByteSpan in(data, size);
  (void)coordinator::PeekEnrolmentRequest(in);

  coordinator::SealedBoxScanner whole;
  const bool whole_ok = whole.Feed(in).ok() && whole.Finish().ok();
  // The same bytes in small chunks (size from the first byte) must get the same verdict.
  coordinator::SealedBoxScanner chunked;
  const size_t step = size == 0 ? 1 : 1 + data[0] % 7;
  bool chunked_ok = true;
  for (size_t off = 0; off < size && chunked_ok; off += step) {
    chunked_ok = chunked.Feed(in.subspan(off, std::min(step, size - off))).ok();
  }
  chunked_ok = chunked_ok && chunked.Finish().ok();
  Expect(whole_ok == chunked_ok);
  if (whole_ok) {
    v1::SealedBox box;
    Expect(box.ParseFromArray(data, static_cast<int>(size)));
    Expect(box.ephemeral_public_key().size() == coordinator::kSealedBoxKeyBytes);
    Expect(box.nonce().size() == coordinator::kSealedBoxNonceBytes);
    Expect(box.ciphertext().size() >= coordinator::kSealedBoxTagBytes);
    Expect(box.ciphertext().size() == whole.ciphertext_bytes());
  }
  return 0;
}
