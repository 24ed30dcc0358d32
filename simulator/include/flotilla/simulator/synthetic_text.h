// Deterministic synthetic English text for training and simulation (test data, not
// secrets, so the PRNG is SplitMix64, not a CSPRNG): the same seed gives the same text on
// every platform and compiler (no std::*_distribution, whose output is implementation-
// defined).
//
//  * A generic corpus for pretraining base models: sentences from one grammar over a
//    shared home / IoT / assistant vocabulary (commands, status reports, questions,
//    routines, small stories).
//  * Per-device non-IID samples: each device draws a DeviceProfile from (fleet seed,
//    device index) — its own rooms, appliances, people, pet, habits (times, routines) and
//    phrasing preferences (template weights, politeness, favourite words) — and writes
//    over the same grammar. A device's text is predictable from its profile and differs
//    across devices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flotilla::simulator {

// SplitMix64 (Steele, Lea, Flood 2014): the whole state is one 64-bit word.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, n) (n > 0), by rejection so it has no modulo bias.
  uint64_t Uniform(uint64_t n);
  // Uniform double in [0, 1) with 53 random bits.
  double UniformDouble();
  // Index drawn with probability proportional to weights[i] (non-negative, not all 0).
  size_t Weighted(const std::vector<double>& weights);

 private:
  uint64_t state_;
};

// Kinds of sentence; the label of a sample is KindName(kind).
enum class SentenceKind : int { kCommand = 0, kStatus, kQuestion, kRoutine, kStory, kCount };
const char* KindName(SentenceKind kind);  // "command", "status", "question", "routine", "story"

struct TextSample {
  std::string text;          // one sentence or a short paragraph, no trailing newline
  int64_t timestamp_ms = 0;  // Unix milliseconds, increasing within one device's stream
  std::optional<std::string> label;  // the sentence kind, when labels are requested
};

// ---- generic corpus -------------------------------------------------------------------

// `count` sentences from the shared grammar (all kinds, uniform phrasing), each one line
// without its newline.
std::vector<std::string> GenerateSentences(uint64_t seed, size_t count);
// Sentences joined by '\n' until the text is at least `target_bytes` long (it ends with
// '\n'; at most one sentence longer than target_bytes).
std::string GenerateCorpus(uint64_t seed, size_t target_bytes);

// ---- per-device non-IID text ------------------------------------------------------------

struct DeviceProfile {
  uint64_t fleet_seed = 0;
  uint64_t device_index = 0;
  std::string owner;                       // first name of the household's main user
  std::vector<std::string> people;         // other household members
  std::string pet;                         // pet name
  std::vector<std::string> rooms;          // e.g. "sunroom", "kitchen"
  std::vector<std::string> appliances;     // e.g. "coffee maker"
  std::vector<std::string> device_names;   // owner's names for appliances, e.g. "Bolt"
  int wake_hour = 7;                       // habits: times the routines mention
  int sleep_hour = 23;
  std::vector<std::string> routines;       // e.g. "yoga", "watering the plants"
  std::vector<double> kind_weights;        // per SentenceKind, sums to 1
  std::vector<std::vector<double>> template_weights;  // per kind, per template (phrasing)
  std::vector<std::string> favourite_words;  // phrasing quirks ("please", "quickly", ...)
  double politeness = 0.5;                 // chance a request starts with a polite prefix
  std::string polite_prefix = "please ";   // the device's usual one ("could you ", ...)
  std::string city;                        // where the weather questions ask about
};

// The profile of device `device_index` in the fleet `fleet_seed` (pure function).
DeviceProfile MakeDeviceProfile(uint64_t fleet_seed, uint64_t device_index);

struct DeviceTextOptions {
  int64_t start_ms = 1'704'067'200'000;  // 2024-01-01T00:00:00Z
  int64_t mean_interval_ms = 3'600'000;  // gaps are uniform in [0.5, 1.5) x mean (integer math)
  bool labels = true;                    // fill TextSample::label with the sentence kind
};

// A device's endless sample stream. Not thread-safe; cheap to create.
class DeviceTextGenerator {
 public:
  DeviceTextGenerator(uint64_t fleet_seed, uint64_t device_index, DeviceTextOptions options = {});
  const DeviceProfile& profile() const { return profile_; }
  TextSample Next();
  std::vector<TextSample> Generate(size_t count);

 private:
  DeviceProfile profile_;
  DeviceTextOptions options_;
  SplitMix64 rng_;
  int64_t now_ms_;
};

// The first `count` samples of device `device_index` (same as DeviceTextGenerator).
std::vector<TextSample> GenerateDeviceSamples(uint64_t fleet_seed, uint64_t device_index, size_t count,
                                              const DeviceTextOptions& options = {});

}  // namespace flotilla::simulator
