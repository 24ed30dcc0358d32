#include "flotilla/simulator/synthetic_text.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace flotilla::simulator {
namespace {

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (word) {
      cur.push_back(c);
    } else {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
      if (c != ' ') out.emplace_back(1, c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// Add-one smoothed unigram model over words; cross-entropy in bits per word.
class Unigram {
 public:
  explicit Unigram(const std::vector<TextSample>& samples) {
    for (const TextSample& s : samples) {
      for (const std::string& w : Words(s.text)) {
        ++counts_[w];
        ++total_;
      }
    }
  }
  double CrossEntropy(const std::vector<TextSample>& samples) const {
    // The open vocabulary: one extra "unseen" bucket per distinct unseen word is the same
    // for every evaluation set, so use a fixed large vocabulary size.
    constexpr double kVocab = 5000;
    double bits = 0;
    int64_t n = 0;
    for (const TextSample& s : samples) {
      for (const std::string& w : Words(s.text)) {
        auto it = counts_.find(w);
        const double c = it == counts_.end() ? 0 : static_cast<double>(it->second);
        bits -= std::log2((c + 1) / (static_cast<double>(total_) + kVocab));
        ++n;
      }
    }
    return bits / static_cast<double>(n);
  }

 private:
  std::unordered_map<std::string, int64_t> counts_;
  int64_t total_ = 0;
};

TEST(SplitMix64Test, MatchesReferenceStream) {
  // Reference: Vigna's splitmix64.c with x = 0.
  SplitMix64 r(0);
  EXPECT_EQ(r.Next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(r.Next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(r.Next(), 0x06C45D188009454Full);
}

TEST(SplitMix64Test, UniformAndWeightedStayInRangeAndFollowWeights) {
  SplitMix64 r(42);
  std::vector<int> hist(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const uint64_t v = r.Uniform(7);
    ASSERT_LT(v, 7u);
    ++hist[v];
  }
  for (int h : hist) EXPECT_NEAR(h, 10000, 600);
  for (int i = 0; i < 1000; ++i) {
    const double d = r.UniformDouble();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
  }
  const std::vector<double> w = {0.0, 3.0, 0.0, 1.0};
  std::vector<int> picks(4, 0);
  for (int i = 0; i < 40000; ++i) ++picks[r.Weighted(w)];
  EXPECT_EQ(picks[0], 0);
  EXPECT_EQ(picks[2], 0);
  EXPECT_NEAR(picks[1], 30000, 800);
}

TEST(GenericCorpusTest, DeterministicPerSeedAndDifferentAcrossSeeds) {
  EXPECT_EQ(GenerateCorpus(7, 20000), GenerateCorpus(7, 20000));
  EXPECT_NE(GenerateCorpus(7, 20000), GenerateCorpus(8, 20000));
  EXPECT_EQ(GenerateSentences(3, 50), GenerateSentences(3, 50));
  EXPECT_NE(GenerateSentences(3, 50), GenerateSentences(4, 50));
}

TEST(GenericCorpusTest, HasRequestedSizeAndIsCleanLines) {
  const std::string c = GenerateCorpus(1, 100000);
  ASSERT_GE(c.size(), 100000u);
  EXPECT_LT(c.size(), 100000u + 400u);
  EXPECT_EQ(c.back(), '\n');
  EXPECT_EQ(GenerateCorpus(1, 0), "");
  for (char ch : c) {
    ASSERT_TRUE(ch == '\n' || (ch >= 0x20 && ch < 0x7F)) << "byte " << static_cast<int>(ch);
  }
  // A shared grammar, but varied: many distinct sentences and a sizeable vocabulary.
  const std::vector<std::string> s = GenerateSentences(1, 2000);
  const std::set<std::string> distinct(s.begin(), s.end());
  EXPECT_GT(distinct.size(), 1800u);
  std::set<std::string> vocab;
  for (const std::string& line : s) {
    for (const std::string& w : Words(line)) vocab.insert(w);
  }
  EXPECT_GT(vocab.size(), 300u);
  for (const std::string& line : s) {
    ASSERT_FALSE(line.empty());
    EXPECT_TRUE(line[0] >= 'A' && line[0] <= 'Z') << line;
    EXPECT_EQ(line.find('{'), std::string::npos) << line;
  }
}

TEST(DeviceTextTest, SameSeedSameSamplesDifferentSeedsDiffer) {
  const auto a = GenerateDeviceSamples(11, 5, 100);
  const auto b = GenerateDeviceSamples(11, 5, 100);
  ASSERT_EQ(a.size(), 100u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].text, b[i].text);
    EXPECT_EQ(a[i].timestamp_ms, b[i].timestamp_ms);
    EXPECT_EQ(a[i].label, b[i].label);
  }
  const auto other_device = GenerateDeviceSamples(11, 6, 100);
  const auto other_fleet = GenerateDeviceSamples(12, 5, 100);
  int same_device = 0, same_fleet = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    same_device += a[i].text == other_device[i].text;
    same_fleet += a[i].text == other_fleet[i].text;
  }
  EXPECT_LT(same_device, 5);
  EXPECT_LT(same_fleet, 5);
  // The generator object and the batch function agree.
  DeviceTextGenerator gen(11, 5);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(gen.Next().text, a[i].text);
}

TEST(DeviceTextTest, SamplesHaveIncreasingTimestampsAndKindLabels) {
  DeviceTextOptions opt;
  opt.start_ms = 1'000'000;
  opt.mean_interval_ms = 1000;
  const auto s = GenerateDeviceSamples(1, 2, 500, opt);
  const std::set<std::string> kinds = {"command", "status", "question", "routine", "story"};
  int64_t prev = opt.start_ms;
  std::set<std::string> seen;
  for (const TextSample& x : s) {
    EXPECT_GE(x.timestamp_ms - prev, 500);
    EXPECT_LT(x.timestamp_ms - prev, 1500);
    prev = x.timestamp_ms;
    ASSERT_TRUE(x.label.has_value());
    EXPECT_TRUE(kinds.count(*x.label)) << *x.label;
    seen.insert(*x.label);
    EXPECT_FALSE(x.text.empty());
    EXPECT_EQ(x.text.find('\n'), std::string::npos);
  }
  EXPECT_EQ(seen.size(), kinds.size());
  opt.labels = false;
  EXPECT_FALSE(GenerateDeviceSamples(1, 2, 1, opt)[0].label.has_value());
}

TEST(DeviceTextTest, ProfilesAreDeterministicAndDistinct) {
  const DeviceProfile p = MakeDeviceProfile(3, 9);
  const DeviceProfile q = MakeDeviceProfile(3, 9);
  EXPECT_EQ(p.owner, q.owner);
  EXPECT_EQ(p.rooms, q.rooms);
  EXPECT_EQ(p.kind_weights, q.kind_weights);
  EXPECT_EQ(p.appliances.size(), p.device_names.size());
  double sum = 0;
  for (double w : p.kind_weights) sum += w;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  std::set<std::string> owners_rooms;
  for (uint64_t d = 0; d < 50; ++d) {
    const DeviceProfile r = MakeDeviceProfile(3, d);
    std::string key = r.owner;
    for (const auto& room : r.rooms) key += "|" + room;
    owners_rooms.insert(key);
  }
  EXPECT_EQ(owners_rooms.size(), 50u);
}

TEST(DeviceTextTest, TextUsesOnlyTheDevicesOwnPeople) {
  const DeviceProfile me = MakeDeviceProfile(5, 1);
  std::set<std::string> mine = {me.owner};
  mine.insert(me.people.begin(), me.people.end());
  std::set<std::string> strangers;
  for (uint64_t d = 2; d < 40; ++d) {
    const DeviceProfile o = MakeDeviceProfile(5, d);
    if (!mine.count(o.owner)) strangers.insert(o.owner);
  }
  ASSERT_GT(strangers.size(), 10u);
  std::set<std::string> used;
  for (const TextSample& s : GenerateDeviceSamples(5, 1, 1000)) {
    for (const std::string& w : Words(s.text)) {
      EXPECT_FALSE(strangers.count(w)) << "device 1 mentions " << w << ": " << s.text;
      if (mine.count(w)) used.insert(w);
    }
  }
  EXPECT_TRUE(used.count(me.owner));
}

// The property federated experiments rely on: a device's text is predictable from its
// own history and much less from another device's.
TEST(DeviceTextTest, UnigramModelOfOneDeviceFitsItsOwnHeldOutTextBest) {
  constexpr int kDevices = 6;
  std::vector<std::vector<TextSample>> train(kDevices), held(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    auto all = GenerateDeviceSamples(2024, static_cast<uint64_t>(d), 600);
    train[d].assign(all.begin(), all.begin() + 400);
    held[d].assign(all.begin() + 400, all.end());
  }
  for (int a = 0; a < kDevices; ++a) {
    const Unigram model(train[a]);
    const double own = model.CrossEntropy(held[a]);
    for (int b = 0; b < kDevices; ++b) {
      if (b == a) continue;
      const double other = model.CrossEntropy(held[b]);
      EXPECT_GT(other, own + 0.5) << "device " << a << " vs " << b << ": own " << own << " bits/word, other "
                                  << other;
    }
  }
}

TEST(DeviceTextTest, ThousandDevicesTimesTwoHundredSamplesIsFast) {
  const auto t0 = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (uint64_t d = 0; d < 1000; ++d) {
    for (const TextSample& s : GenerateDeviceSamples(77, d, 200)) bytes += s.text.size();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("1000 devices x 200 samples: %.3f s, %.1f MB of text\n", secs, static_cast<double>(bytes) / 1e6);
  EXPECT_GT(bytes, 1000u * 200u * 20u);
  // Well under a second in an optimized build; generous for sanitizer builds.
  EXPECT_LT(secs, 10.0);
}

}  // namespace
}  // namespace flotilla::simulator
