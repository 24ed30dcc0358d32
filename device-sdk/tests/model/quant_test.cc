// Reference quantization tests. Expected bytes are written out from the format
// definitions (reference/gguf-and-quant.md section 2), not produced by the code.
#include "flotilla/model/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "flotilla/model/model_file.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::model {
namespace {

constexpr Half kHalfOne = 0x3C00;   // 1.0
constexpr Half kHalfHalf = 0x3800;  // 0.5
constexpr Half kHalfQuarter = 0x3400;  // 0.25

TEST(TypeTraitsTest, SizesMatchGgml) {
  EXPECT_EQ(Traits(GgmlType::kQ8_0).type_size, sizeof(BlockQ8_0));
  EXPECT_EQ(Traits(GgmlType::kQ4_0).type_size, sizeof(BlockQ4_0));
  EXPECT_EQ(Traits(GgmlType::kQ4_K).type_size, sizeof(BlockQ4_K));
  EXPECT_EQ(Traits(GgmlType::kQ6_K).type_size, sizeof(BlockQ6_K));
  EXPECT_EQ(Traits(GgmlType::kQ8_K).type_size, sizeof(BlockQ8_K));
  EXPECT_EQ(*RowSize(GgmlType::kQ4_0, 64), 36u);
  EXPECT_EQ(*RowSize(GgmlType::kQ6_K, 512), 420u);
  EXPECT_EQ(*RowSize(GgmlType::kF16, 3), 6u);
  EXPECT_FALSE(RowSize(GgmlType::kQ8_0, 33).ok());
  EXPECT_FALSE(RowSize(GgmlType::kQ4_K, 288).ok());
  EXPECT_EQ(FindTypeTraits(4), nullptr);   // removed Q4_2
  EXPECT_EQ(FindTypeTraits(16), nullptr);  // IQ2_XXS: not supported
  EXPECT_EQ(*ParseTypeName("Q4_k"), GgmlType::kQ4_K);
  EXPECT_EQ(TypeName(GgmlType::kBF16), "bf16");
  const int64_t ne[] = {int64_t{1} << 32, int64_t{1} << 32};
  EXPECT_FALSE(TensorBytes(GgmlType::kF32, ne).ok());
}

TEST(QuantTest, Q8_0HandComputedBlock) {
  // amax = 127 -> d = 1.0 (half 0x3C00), q = roundf(x): halves round away from zero.
  float x[32];
  int8_t want[32];
  for (int j = 0; j < 32; ++j) {
    x[j] = static_cast<float>(j - 16);
    want[j] = static_cast<int8_t>(j - 16);
  }
  x[0] = 127.0f, want[0] = 127;
  x[1] = -127.0f, want[1] = -127;
  x[2] = 2.5f, want[2] = 3;
  x[3] = -2.5f, want[3] = -3;
  x[4] = 0.49f, want[4] = 0;
  BlockQ8_0 b;
  QuantizeRowQ8_0(x, &b, 32);
  EXPECT_EQ(b.d, kHalfOne);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;

  // Bytes on disk: d little-endian, then the int8s.
  Bytes bytes = *QuantizeToBytes(GgmlType::kQ8_0, x);
  ASSERT_EQ(bytes.size(), 34u);
  EXPECT_EQ(bytes[0], 0x00);
  EXPECT_EQ(bytes[1], 0x3C);
  EXPECT_EQ(static_cast<int8_t>(bytes[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(bytes[3]), -127);

  float back[32];
  DequantizeRowQ8_0(&b, back, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(back[j], static_cast<float>(want[j]));
}

TEST(QuantTest, Q8_0ZeroBlock) {
  float x[32] = {};
  BlockQ8_0 b;
  std::memset(&b, 0xAB, sizeof(b));
  QuantizeRowQ8_0(x, &b, 32);
  EXPECT_EQ(b.d, 0);
  for (int8_t q : b.qs) EXPECT_EQ(q, 0);
}

TEST(QuantTest, Q4_0HandComputedBlockNegativeMax) {
  // Largest magnitude is -8 -> d = -8 / -8 = 1.0; q = min(15, (int8)(x + 8.5)).
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = 0.0f;  // -> (int8)8.5 = 8
  x[0] = -8.0f;   // -> 0
  x[1] = 7.0f;    // -> 15
  x[2] = 7.6f;    // -> 16 clamped to 15
  x[3] = -0.6f;   // -> (int8)7.9 = 7
  x[4] = 2.4f;    // -> (int8)10.9 = 10
  x[16] = 1.0f;   // -> 9   (high nibble of qs[0])
  x[17] = -7.9f;  // -> (int8)0.6 = 0 (high nibble of qs[1])
  x[31] = 3.0f;   // -> 11  (high nibble of qs[15])
  BlockQ4_0 b;
  QuantizeRowQ4_0(x, &b, 32);
  EXPECT_EQ(b.d, kHalfOne);
  const uint8_t want[16] = {0x90, 0x0F, 0x8F, 0x87, 0x8A, 0x88, 0x88, 0x88,
                            0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0xB8};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;

  float back[32];
  DequantizeRowQ4_0(&b, back, 32);
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[1], 7.0f);
  EXPECT_EQ(back[3], -1.0f);
  EXPECT_EQ(back[16], 1.0f);
  EXPECT_EQ(back[17], -8.0f);
  EXPECT_EQ(back[31], 3.0f);
}

TEST(QuantTest, Q4_0PositiveMaxFlipsScaleSign) {
  // Largest magnitude is +4 -> d = 4 / -8 = -0.5, 1/d = -2: x = 4 -> 0.5 -> 0,
  // x = -4 -> 16.5 -> 16 -> 15, x = 0 -> 8, x = 1 -> 6.5 -> 6.
  float x[32] = {};
  x[0] = 4.0f;
  x[1] = -4.0f;
  x[2] = 1.0f;
  BlockQ4_0 b;
  QuantizeRowQ4_0(x, &b, 32);
  EXPECT_EQ(b.d, 0xB800);  // -0.5
  EXPECT_EQ(b.qs[0], 0x80);
  EXPECT_EQ(b.qs[1], 0x8F);
  EXPECT_EQ(b.qs[2], 0x86);
  float back[32];
  DequantizeRowQ4_0(&b, back, 32);
  EXPECT_EQ(back[0], 4.0f);
  EXPECT_EQ(back[1], -3.5f);  // the asymmetric grid cannot hold -4 with d = -0.5
  EXPECT_EQ(back[2], 1.0f);
}

TEST(QuantTest, Q4_KDequantizeHandBuiltBlock) {
  const uint8_t sc[8] = {1, 2, 3, 4, 17, 33, 63, 5};
  const uint8_t mn[8] = {0, 1, 2, 3, 40, 50, 63, 7};
  BlockQ4_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  // 6-bit packing: bytes 0-3 = sc[0..3] | top two bits of sc[4..7]; bytes 4-7 = m[0..3] |
  // top two bits of m[4..7]; bytes 8-11 = low nibble sc[4..7] | low nibble m[4..7] << 4.
  for (int k = 0; k < 4; ++k) {
    b.scales[k] = static_cast<uint8_t>(sc[k] | ((sc[k + 4] >> 4) << 6));
    b.scales[k + 4] = static_cast<uint8_t>(mn[k] | ((mn[k + 4] >> 4) << 6));
    b.scales[k + 8] = static_cast<uint8_t>((sc[k + 4] & 0xF) | ((mn[k + 4] & 0xF) << 4));
  }
  auto q_of = [](int e) { return (e * 7 + 3) % 16; };
  // Each 64-element chunk c uses qs[32c..32c+31]: low nibbles = elements 64c..64c+31,
  // high nibbles = elements 64c+32..64c+63.
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>(q_of(64 * c + l) | (q_of(64 * c + 32 + l) << 4));
    }
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    GetScaleMinK4(j, b.scales, &s, &m);
    EXPECT_EQ(s, sc[j]) << j;
    EXPECT_EQ(m, mn[j]) << j;
  }
  float y[256];
  DequantizeRowQ4_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;
    const float want = 1.0f * sc[j] * static_cast<float>(q_of(e)) - 0.5f * mn[j];
    EXPECT_EQ(y[e], want) << e;
  }
}

TEST(QuantTest, Q6_KDequantizeHandBuiltBlock) {
  BlockQ6_K b{};
  b.d = kHalfQuarter;
  for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<int8_t>(s % 2 == 0 ? s + 1 : -(s * 3));
  auto q_of = [](int e) { return (e * 5 + 1) % 64; };
  // Per 128-element half h, l < 32: element l -> low4 ql[l] + bits 0-1 of qh[l];
  // l+32 -> low4 ql[l+32] + bits 2-3; l+64 -> high4 ql[l] + bits 4-5; l+96 -> high4
  // ql[l+32] + bits 6-7 (ql offset 64h, qh offset 32h).
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int base = 128 * h;
      const int q0 = q_of(base + l), q1 = q_of(base + l + 32), q2 = q_of(base + l + 64), q3 = q_of(base + l + 96);
      b.ql[64 * h + l] = static_cast<uint8_t>((q0 & 0xF) | ((q2 & 0xF) << 4));
      b.ql[64 * h + l + 32] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      b.qh[32 * h + l] = static_cast<uint8_t>((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
    }
  }
  float y[256];
  DequantizeRowQ6_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) {
    const float want = 0.25f * static_cast<float>(b.scales[e / 16]) * static_cast<float>(q_of(e) - 32);
    EXPECT_EQ(y[e], want) << e;
  }
}

std::vector<float> TestValues(size_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.NextSymmetric() * 3.0f;
  return v;
}

double RelativeRmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    err += d * d;
    ref += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  }
  return std::sqrt(err / ref);
}

TEST(QuantTest, Q8_0MatchesDefinitionOnRandomData) {
  const std::vector<float> x = TestValues(32 * 64, 7);
  std::vector<BlockQ8_0> b(64);
  QuantizeRowQ8_0(x.data(), b.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < b.size(); ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * i + j]));
    const float d = amax / 127;
    ASSERT_EQ(b[i].d, FloatToHalf(d));
    for (int j = 0; j < 32; ++j) ASSERT_EQ(b[i].qs[j], static_cast<int8_t>(std::round(x[32 * i + j] * (1.0f / d))));
  }
}

// K-quant quantizers are ports of quantize_row_q{4,6}_K_ref; without llama.cpp here we
// check that they are accurate, deterministic and consistent with the dequantizers.
TEST(QuantTest, KQuantsRoundTripAccurately) {
  const std::vector<float> x = TestValues(256 * 8, 11);
  struct Case {
    GgmlType type;
    double max_rel_rmse;
  };
  for (const Case c : {Case{GgmlType::kQ4_K, 0.12}, Case{GgmlType::kQ6_K, 0.03}, Case{GgmlType::kQ8_0, 0.01},
                       Case{GgmlType::kQ4_0, 0.15}, Case{GgmlType::kF16, 1e-3}, Case{GgmlType::kBF16, 8e-3}}) {
    Bytes q = *QuantizeToBytes(c.type, x);
    EXPECT_EQ(q, *QuantizeToBytes(c.type, x));
    std::vector<float> back = *DequantizeToFloats(c.type, q, static_cast<int64_t>(x.size()));
    const double e = RelativeRmse(x, back);
    EXPECT_LT(e, c.max_rel_rmse) << TypeName(c.type);
    EXPECT_GT(e, 0.0) << TypeName(c.type);
  }
}

TEST(QuantTest, Q4_KScalesStayInSixBitsAndZeroBlockIsZero) {
  std::vector<float> x(256, 0.0f);
  BlockQ4_K b;
  QuantizeRowQ4_K(x.data(), &b, 256);
  float y[256];
  DequantizeRowQ4_K(&b, y, 256);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  BlockQ6_K b6;
  QuantizeRowQ6_K(x.data(), &b6, 256);
  EXPECT_EQ(b6.d, 0);
  // All-positive data: the min clamps to 0, so 16 values share 15 steps of ~16/15.
  for (int i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = 1.0f + static_cast<float>(i % 16);
  QuantizeRowQ4_K(x.data(), &b, 256);
  DequantizeRowQ4_K(&b, y, 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[static_cast<size_t>(i)], 16.0f / 15.0f) << i;
}

TEST(QuantTest, GenericEntryPointsRejectBadSizes) {
  std::vector<float> x(40);
  Bytes out(100);
  EXPECT_EQ(Quantize(GgmlType::kQ8_0, x, out).code(), StatusCode::kInvalidArgument);
  x.resize(32);
  EXPECT_EQ(Quantize(GgmlType::kQ8_0, x, out).code(), StatusCode::kInvalidArgument);  // dst size
  out.resize(34);
  EXPECT_TRUE(Quantize(GgmlType::kQ8_0, x, out).ok());
  EXPECT_EQ(Quantize(GgmlType::kQ5_K, x, out).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(DequantizeToFloats(GgmlType::kQ4_0, out, 32).ok());  // 34 bytes, needs 18
  // Unaligned source bytes are fine for the generic path.
  Bytes shifted(35);
  std::memcpy(shifted.data() + 1, out.data(), 34);
  std::vector<float> y(32);
  EXPECT_TRUE(Dequantize(GgmlType::kQ8_0, ByteSpan(shifted).subspan(1), y).ok());
}

}  // namespace
}  // namespace flotilla::model
