#include "flotilla/security/shamir.h"

#include <gtest/gtest.h>

#include <numeric>

#include "flotilla/core/testing/seeded_random.h"
#include "gf61.h"
#include "test_util.h"

namespace flotilla::security {
namespace {

using flotilla::testing::SeededRandom;
constexpr uint64_t kP = kShamirPrime;

uint64_t RefMul(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>(static_cast<gf61::Uint128>(a) * b % kP);
}

TEST(Gf61Test, MatchesPlainModularArithmetic) {
  SeededRandom rng(11);
  const uint64_t edge[] = {0, 1, 2, kP - 1, kP - 2, uint64_t{1} << 60, (uint64_t{1} << 60) + 1};
  std::vector<uint64_t> values(edge, edge + std::size(edge));
  for (int i = 0; i < 2000; ++i) values.push_back(rng.Uniform(kP));
  for (size_t i = 0; i < values.size(); ++i) {
    const uint64_t a = values[i], b = values[(i * 7 + 3) % values.size()];
    ASSERT_EQ(gf61::Mul(a, b), RefMul(a, b)) << a << " * " << b;
    ASSERT_EQ(gf61::Add(a, b), (a + b) % kP);
    ASSERT_EQ(gf61::Sub(a, b), (a + kP - b) % kP);
    if (a != 0) {
      ASSERT_EQ(gf61::Mul(a, gf61::Inv(a)), 1u) << a;
    }
  }
}

Bytes RandomSecret(Random& rng, size_t n) {
  Bytes s(n);
  rng.Fill(s);
  return s;
}

// Calls f on every k-subset of {0..n-1}.
template <typename F>
void ForEachSubset(size_t n, size_t k, F f) {
  std::vector<bool> pick(n, false);
  std::fill(pick.begin(), pick.begin() + static_cast<ptrdiff_t>(k), true);
  do {
    std::vector<size_t> idx;
    for (size_t i = 0; i < n; ++i)
      if (pick[i]) idx.push_back(i);
    f(idx);
  } while (std::prev_permutation(pick.begin(), pick.end()));
}

std::vector<ShamirShare> Pick(const std::vector<ShamirShare>& all, const std::vector<size_t>& idx) {
  std::vector<ShamirShare> out;
  for (size_t i : idx) out.push_back(all[i]);
  return out;
}

TEST(ShamirTest, AnyTOfNReconstructsAllSubsetsSmallN) {
  SeededRandom rng(12);
  for (size_t secret_len : {1u, 7u, 8u, 32u, 33u}) {
    for (size_t n = 1; n <= 6; ++n) {
      for (size_t t = 1; t <= n; ++t) {
        const Bytes secret = RandomSecret(rng, secret_len);
        Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, t, n, rng);
        FLT_ASSERT_OK(shares);
        ASSERT_EQ(shares->size(), n);
        for (const ShamirShare& s : *shares) ASSERT_EQ(s.y.size(), ShamirElementCount(secret_len));
        for (size_t k = t; k <= n; ++k) {
          ForEachSubset(n, k, [&](const std::vector<size_t>& idx) {
            Result<Bytes> r = ShamirReconstruct(Pick(*shares, idx), t, secret_len);
            ASSERT_TRUE(r.ok()) << r.status().ToString();
            ASSERT_EQ(*r, secret) << "n=" << n << " t=" << t << " k=" << k;
          });
        }
      }
    }
  }
}

TEST(ShamirTest, RandomSubsetsLargeN) {
  SeededRandom rng(13);
  const size_t n = 100, t = 34;
  std::vector<uint64_t> xs(n);
  for (size_t i = 0; i < n; ++i) xs[i] = 1000 + 17 * i;  // arbitrary (e.g. device indices)
  const Bytes secret = RandomSecret(rng, 32);
  Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, t, xs, rng);
  FLT_ASSERT_OK(shares);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (int trial = 0; trial < 30; ++trial) {
    for (size_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.Uniform(i + 1)]);
    const size_t k = t + static_cast<size_t>(rng.Uniform(n - t + 1));
    Result<Bytes> r = ShamirReconstruct(Pick(*shares, {order.begin(), order.begin() + static_cast<ptrdiff_t>(k)}), t, 32);
    FLT_ASSERT_OK(r);
    EXPECT_EQ(*r, secret);
  }
}

// Lagrange interpolation through arbitrary points, evaluated at x (plain, O(k^2)).
uint64_t Interpolate(const std::vector<std::pair<uint64_t, uint64_t>>& pts, uint64_t x) {
  uint64_t acc = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    uint64_t num = 1, den = 1;
    for (size_t j = 0; j < pts.size(); ++j) {
      if (i == j) continue;
      num = gf61::Mul(num, gf61::Sub(x, pts[j].first));
      den = gf61::Mul(den, gf61::Sub(pts[i].first, pts[j].first));
    }
    acc = gf61::Add(acc, gf61::Mul(pts[i].second, gf61::Mul(num, gf61::Inv(den))));
  }
  return acc;
}

TEST(ShamirTest, TMinusOneSharesAreConsistentWithAnySecret) {
  SeededRandom rng(14);
  const size_t n = 7, t = 4, len = 14;  // 2 elements
  const Bytes secret = RandomSecret(rng, len);
  Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, t, n, rng);
  FLT_ASSERT_OK(shares);
  const std::vector<ShamirShare> known(shares->begin(), shares->begin() + (t - 1));
  for (int trial = 0; trial < 5; ++trial) {
    // Any other secret s': the degree-(t-1) polynomial through (0, s') and the t-1 known
    // shares exists; build a t-th share from it and reconstruct s'.
    const Bytes other = RandomSecret(rng, len);
    ASSERT_NE(other, secret);
    ShamirShare forged{.x = 99, .y = {}};
    for (size_t e = 0; e < ShamirElementCount(len); ++e) {
      uint64_t s = 0;
      for (size_t b = 0; b < 7; ++b) s |= static_cast<uint64_t>(other[e * 7 + b]) << (8 * b);
      std::vector<std::pair<uint64_t, uint64_t>> pts = {{0, s}};
      for (const ShamirShare& k : known) pts.emplace_back(k.x, k.y[e]);
      // The polynomial reproduces the given shares...
      for (const ShamirShare& k : known) ASSERT_EQ(Interpolate(pts, k.x), k.y[e]);
      forged.y.push_back(Interpolate(pts, forged.x));
    }
    // ...and, with the t-1 real shares, reconstructs s'.
    std::vector<ShamirShare> set = known;
    set.push_back(forged);
    Result<Bytes> r = ShamirReconstruct(set, t, len);
    FLT_ASSERT_OK(r);
    EXPECT_EQ(*r, other);
  }
  // And with the real t-th share, the real secret.
  std::vector<ShamirShare> real = known;
  real.push_back((*shares)[t - 1]);
  Result<Bytes> r = ShamirReconstruct(real, t, len);
  FLT_ASSERT_OK(r);
  EXPECT_EQ(*r, secret);
}

TEST(ShamirTest, SharesOfOneSecretLookUniform) {
  // With t >= 2 a single share's values are uniform in GF(p): the same secret shared twice
  // gives unrelated values, and the top bit of each is set about half the time.
  SeededRandom rng(15);
  const Bytes secret(32, 0);
  int top_bits = 0, total = 0;
  for (int i = 0; i < 200; ++i) {
    Result<std::vector<ShamirShare>> s = ShamirSplit(secret, 2, 3, rng);
    FLT_ASSERT_OK(s);
    for (uint64_t y : (*s)[0].y) {
      top_bits += static_cast<int>(y >> 60);
      ++total;
    }
  }
  EXPECT_NEAR(static_cast<double>(top_bits) / total, 0.5, 0.06);
}

TEST(ShamirTest, RejectsBadX) {
  SeededRandom rng(16);
  const Bytes secret(32, 1);
  const std::vector<std::vector<uint64_t>> bad = {{0, 1, 2}, {1, kP, 2}, {1, kP + 5, 3}, {1, 2, 2}, {UINT64_MAX, 1, 2}};
  for (const auto& xs : bad) {
    EXPECT_EQ(ShamirSplit(secret, 2, xs, rng).status().code(), StatusCode::kInvalidArgument);
  }
  const std::vector<uint64_t> ok = {1, kP - 1, 12345};
  Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, 2, ok, rng);
  FLT_ASSERT_OK(shares);
  Result<Bytes> r = ShamirReconstruct(std::span(*shares).subspan(1), 2, 32);
  FLT_ASSERT_OK(r);
  EXPECT_EQ(*r, secret);

  std::vector<ShamirShare> tampered = *shares;
  tampered[1].x = 0;
  EXPECT_EQ(ShamirReconstruct(tampered, 2, 32).status().code(), StatusCode::kInvalidArgument);
  tampered[1].x = kP;
  EXPECT_EQ(ShamirReconstruct(tampered, 2, 32).status().code(), StatusCode::kInvalidArgument);
  tampered[1].x = tampered[0].x;
  EXPECT_EQ(ShamirReconstruct(tampered, 2, 32).status().code(), StatusCode::kInvalidArgument);
}

TEST(ShamirTest, RejectsBadThresholdsAndLengths) {
  SeededRandom rng(17);
  const Bytes secret(32, 7);
  EXPECT_EQ(ShamirSplit(secret, 0, 3, rng).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirSplit(secret, 4, 3, rng).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirSplit({}, 2, 3, rng).status().code(), StatusCode::kInvalidArgument);
  Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, 3, 5, rng);
  FLT_ASSERT_OK(shares);
  const std::vector<ShamirShare>& s = *shares;
  EXPECT_EQ(ShamirReconstruct(std::span(s).first(2), 3, 32).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirReconstruct(s, 0, 32).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirReconstruct(s, 3, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirReconstruct(s, 3, 40).status().code(), StatusCode::kInvalidArgument);  // 6 elements expected
  std::vector<ShamirShare> short_y = s;
  short_y[2].y.pop_back();
  EXPECT_EQ(ShamirReconstruct(short_y, 3, 32).status().code(), StatusCode::kInvalidArgument);
  std::vector<ShamirShare> big_y = s;
  big_y[0].y[0] = kP;
  EXPECT_EQ(ShamirReconstruct(big_y, 3, 32).status().code(), StatusCode::kInvalidArgument);
}

TEST(ShamirTest, DetectsCorruptedShares) {
  SeededRandom rng(18);
  const Bytes secret = RandomSecret(rng, 32);
  Result<std::vector<ShamirShare>> shares = ShamirSplit(secret, 3, 5, rng);
  FLT_ASSERT_OK(shares);
  // An extra share that disagrees with the first t.
  std::vector<ShamirShare> bad = *shares;
  bad[4].y[2] = gf61::Add(bad[4].y[2], 1);
  EXPECT_EQ(ShamirReconstruct(bad, 3, 32).status().code(), StatusCode::kDataLoss);
  // Any corrupted share among the first t is caught by a correct extra share.
  bad = *shares;
  bad[0].y[4] = gf61::Add(bad[0].y[4], 1);
  EXPECT_EQ(ShamirReconstruct(bad, 3, 32).status().code(), StatusCode::kDataLoss);
  // Exactly t shares, one replaced by random values: each decoded element is then
  // uniform in GF(p) and still a valid chunk (< 2^56) with probability 1/32 only, so the
  // corruption goes unnoticed with probability < 2^-25.
  std::vector<ShamirShare> t_only(shares->begin(), shares->begin() + 3);
  for (uint64_t& y : t_only[1].y) y = rng.Uniform(kP);
  EXPECT_EQ(ShamirReconstruct(t_only, 3, 32).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace flotilla::security
