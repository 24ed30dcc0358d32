#include "flotilla/simulator/synthetic_text.h"

#include <array>
#include <cstdio>
#include <numeric>
#include <string_view>
#include <utility>

namespace flotilla::simulator {
namespace {

using Pool = std::vector<std::string_view>;

// ---- word pools (the shared vocabulary) -------------------------------------------------

const Pool kRooms = {"kitchen",  "living room", "bedroom",     "bathroom",  "hallway",    "garage",
                     "office",   "sunroom",     "basement",    "attic",     "nursery",    "guest room",
                     "porch",    "den",         "laundry room", "pantry",   "study",      "playroom",
                     "workshop", "library",     "dining room", "balcony",   "patio",      "gym",
                     "studio",   "loft",        "cellar",      "closet",    "greenhouse", "music room"};
const Pool kAppliances = {"ceiling light",         "heater",        "fan",          "air conditioner", "coffee maker",
                          "kettle",         "oven",          "dishwasher",   "washing machine", "dryer",
                          "vacuum",         "speaker",       "television",   "radio",           "humidifier",
                          "air purifier",   "fridge",        "freezer",      "toaster",         "microwave",
                          "rice cooker",    "water heater",  "sprinkler",    "garage door",     "doorbell",
                          "camera",         "thermostat",    "blinds",       "lamp",            "night light",
                          "printer",        "router",        "aquarium pump", "pet feeder",     "bread maker",
                          "space heater",   "towel warmer",  "fireplace",    "projector",       "robot mower"};
const Pool kNicknames = {"Bolt",  "Juniper", "Pixel", "Clover", "Sparky", "Marble", "Nimbus", "Echo",
                         "Biscuit", "Comet", "Pepper", "Rusty", "Willow", "Zephyr", "Tango",  "Maple",
                         "Orbit", "Pebble", "Ziggy",  "Hazel",  "Mochi",  "Rocket", "Sage",   "Button",
                         "Dash",  "Ember",  "Fizz",   "Gizmo",  "Indigo", "Jazz",   "Kiwi",   "Lumen",
                         "Mango", "Noodle", "Olive",  "Pogo",   "Quill",  "Ripple", "Scout",  "Toffee",
                         "Umber", "Vesper", "Waffle", "Yuzu",   "Zinnia", "Acorn",  "Bramble", "Cinder"};
const Pool kNames = {"Alice",  "Bruno",  "Chloe",  "Dmitri", "Elena",  "Farah",   "George", "Hana",    "Ivan",
                     "Julia",  "Kenji",  "Lena",   "Marco",  "Nadia",  "Omar",    "Priya",  "Quentin", "Rosa",
                     "Samir",  "Tara",   "Umar",   "Vera",   "Wei",    "Ximena",  "Yusuf",  "Zoe",     "Amara",
                     "Ben",    "Carla",  "Diego",  "Emma",   "Felix",  "Greta",   "Hugo",   "Ines",    "Jonas",
                     "Kira",   "Luca",   "Maya",   "Nils",   "Olga",   "Pablo",   "Rhea",   "Sven",    "Tomas",
                     "Una",    "Viktor", "Wanda",  "Yara",   "Zane",   "Aiko",    "Bilal",  "Cora",    "Dario",
                     "Esther", "Fynn",   "Gaia",   "Henrik", "Isla",   "Jamal",   "Kofi",   "Leila",   "Milan",
                     "Noor",   "Oscar",  "Paula",  "Ravi",   "Sofia",  "Theo",    "Ursula", "Valentin", "Wren",
                     "Xavier", "Yasmin", "Zora",   "Anton",  "Beatriz", "Cyrus",  "Daphne", "Elias"};
const Pool kPets = {"Rex",    "Luna",  "Milo",   "Bella",  "Oreo",   "Simba", "Nala",   "Charlie", "Coco",  "Loki",
                    "Pumpkin", "Ginger", "Shadow", "Pepper", "Tiger", "Misty", "Buddy",  "Daisy",   "Felix", "Gus",
                    "Hoppy",  "Ivy",   "Jasper", "Kona",   "Lucky",  "Muffin", "Nemo",  "Pip",     "Rufus", "Sushi"};
const Pool kRoutines = {"yoga",          "the morning run",   "breakfast",          "the school run",
                        "piano practice", "the evening walk", "watering the plants", "the gym",
                        "meditation",    "reading time",      "dinner",             "the night shift",
                        "swimming",      "the team meeting",  "laundry day",        "the bike ride",
                        "homework",      "the language class", "gardening",         "the grocery run",
                        "cooking class", "the dog walk",      "band rehearsal",     "the podcast recording",
                        "choir",         "the football match", "the chess club",    "painting",
                        "the book club", "the family call"};
const Pool kCities = {"Lisbon", "Oslo",     "Nairobi",  "Lima",   "Osaka",    "Denver", "Tbilisi", "Hanoi",
                      "Quito",  "Porto",    "Krakow",   "Accra",  "Busan",    "Austin", "Tallinn", "Perth",
                      "Bergen", "Valencia", "Montreal", "Dakar",  "Sapporo",  "Leeds",  "Cusco",   "Hobart",
                      "Ghent",  "Bologna",  "Tartu",    "Malmo",  "Cork",     "Seville"};
const Pool kDays = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
const Pool kWeather = {"sunny", "rainy", "windy", "snowy", "foggy", "stormy", "cloudy", "humid"};
const Pool kPolitePrefixes = {"please ", "could you ", "hey, ", "kindly ", "would you ", "can you "};
const Pool kFavourites = {" now",     " right away", " for me", " again",   " quickly",   " thanks",
                          " if you can", " as usual", " soon",   " please", " real quick", " for a bit"};

// ---- the grammar ------------------------------------------------------------------------
// Slots: {room} {appliance} {name} (the appliance's nickname) {person} {owner} {pet}
// {time} {wake} {sleep} {routine} {temp} {pct} {city} {day} {weather} {minutes} {kwh}
// {please} (politeness prefix, may be empty) {fav} (favourite ending, may be empty).
// One value per slot per sentence, so "{appliance} ... {name}" agree.

using Templates = std::vector<std::string_view>;
const std::array<Templates, static_cast<size_t>(SentenceKind::kCount)> kTemplates = {{
    // kCommand
    {"{please}turn on the {appliance} in the {room}{fav}.",
     "{please}switch off the {room} lights{fav}.",
     "{name}, set the {room} to {temp} degrees{fav}.",
     "{please}start the {appliance} at {time}{fav}.",
     "{please}dim the {room} lights to {pct} percent{fav}.",
     "{name}, remind {person} about {routine} at {time}.",
     "{please}lock the front door and turn off the {appliance}{fav}.",
     "{please}play some music in the {room}{fav}.",
     "{please}open the blinds in the {room} at {wake}.",
     "{name}, stop for {minutes} minutes{fav}.",
     "{please}run the {appliance} for {minutes} minutes{fav}."},
    // kStatus
    {"The {appliance} in the {room} is now on.",
     "{name} finished its cycle at {time}.",
     "The {room} is at {temp} degrees and the humidity is {pct} percent.",
     "The battery of the {appliance} is at {pct} percent.",
     "{person} left the {room} at {time} and the lights went off.",
     "The motion sensor in the {room} saw {pet} at {time}.",
     "Energy use today was {kwh} kilowatt hours, mostly from the {appliance}.",
     "{name} is offline since {time}, the {room} hub cannot reach it.",
     "The {appliance} has been running for {minutes} minutes."},
    // kQuestion
    {"What is the weather in {city} today?",
     "Is the {appliance} in the {room} still on?",
     "When did {person} come home?",
     "How warm is it in the {room}?",
     "{please}tell me if {pet} has been fed.",
     "Did I leave the {appliance} on in the {room}?",
     "What time is {routine} on {day}?",
     "Is it going to be {weather} in {city} on {day}?",
     "How long until {name} is done?"},
    // kRoutine
    {"Every {day} at {time} {owner} goes to {routine}.",
     "At {wake} the {room} lights fade in and the {appliance} starts.",
     "Good night: at {sleep} turn off everything except the {appliance}.",
     "On weekdays {person} starts {routine} at {time}.",
     "After {routine}, {owner} likes the {room} at {temp} degrees.",
     "Before {routine} on {day}, {name} warms up the {room}.",
     "When {owner} wakes at {wake}, {name} makes coffee and reads the news for {city}."},
    // kStory
    {"{owner} came home from {routine} and asked {name} to warm up the {room}. {pet} was waiting by the door.",
     "It was a {weather} {day} in {city}, so {person} stayed in the {room} with {pet}.",
     "Last night the {appliance} made a strange noise, and {owner} asked {name} to turn it off.",
     "{person} and {owner} cooked dinner while the {appliance} hummed in the {room}.",
     "On {day} {pet} knocked over a plant in the {room}, and {name} sent {owner} a photo.",
     "After a {weather} morning, {person} spent {minutes} minutes on {routine} and then napped in the {room}."},
}};

// Picks k distinct items of `pool` (partial Fisher-Yates).
std::vector<std::string> PickDistinct(SplitMix64& rng, const Pool& pool, size_t k) {
  std::vector<size_t> idx(pool.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::vector<std::string> out;
  for (size_t i = 0; i < k && i < idx.size(); ++i) {
    const size_t j = i + static_cast<size_t>(rng.Uniform(idx.size() - i));
    std::swap(idx[i], idx[j]);
    out.emplace_back(pool[idx[i]]);
  }
  return out;
}

std::vector<std::string> All(const Pool& pool) { return std::vector<std::string>(pool.begin(), pool.end()); }

// Skewed positive weights: a few dominate, so devices phrase things differently.
std::vector<double> SkewedWeights(SplitMix64& rng, size_t n, double floor) {
  std::vector<double> w(n);
  double sum = 0;
  for (double& x : w) {
    const double u = rng.UniformDouble();
    x = floor + u * u * u;
    sum += x;
  }
  for (double& x : w) x /= sum;
  return w;
}

void AppendInt(std::string& out, int64_t v) {
  char buf[24];
  const int n = std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
  out.append(buf, static_cast<size_t>(n));
}

void AppendClock(std::string& out, int hour, int minute) {
  char buf[8];
  const int n = std::snprintf(buf, sizeof(buf), "%d:%02d", hour, minute);
  out.append(buf, static_cast<size_t>(n));
}

// The "profile" of the generic corpus: every word of every pool, uniform phrasing.
const DeviceProfile& UniversalProfile() {
  static const DeviceProfile p = [] {
    DeviceProfile u;
    u.owner = "";
    u.people = All(kNames);
    u.rooms = All(kRooms);
    u.appliances = All(kAppliances);
    u.device_names = All(kNicknames);
    u.routines = All(kRoutines);
    u.kind_weights.assign(static_cast<size_t>(SentenceKind::kCount), 1.0 / static_cast<double>(SentenceKind::kCount));
    for (const Templates& t : kTemplates) u.template_weights.emplace_back(t.size(), 1.0 / static_cast<double>(t.size()));
    u.favourite_words = All(kFavourites);
    u.politeness = 0.5;
    return u;
  }();
  return p;
}

// Expands one sentence of `kind` for `p`. `universal` draws owner, pet, city, habits
// fresh for each sentence instead of from the profile.
class SentenceWriter {
 public:
  SentenceWriter(const DeviceProfile& p, bool universal, SplitMix64& rng) : p_(p), universal_(universal), rng_(rng) {}

  SentenceKind PickKind() { return static_cast<SentenceKind>(rng_.Weighted(p_.kind_weights)); }

  void Write(SentenceKind kind, std::string& out) {
    filled_ = 0;
    const auto k = static_cast<size_t>(kind);
    const std::string_view tpl = kTemplates[k][rng_.Weighted(p_.template_weights[k])];
    const size_t begin = out.size();
    for (size_t i = 0; i < tpl.size();) {
      if (tpl[i] != '{') {
        const size_t next = tpl.find('{', i);
        const size_t end = next == std::string_view::npos ? tpl.size() : next;
        out.append(tpl.substr(i, end - i));
        i = end;
        continue;
      }
      const size_t close = tpl.find('}', i);
      AppendSlot(tpl.substr(i + 1, close - i - 1), out);
      i = close + 1;
    }
    if (out.size() > begin && out[begin] >= 'a' && out[begin] <= 'z') out[begin] = static_cast<char>(out[begin] - 32);
  }

 private:
  enum class Slot : int { kRoom, kAppliance, kPerson, kOwner, kPet, kTime, kRoutine, kTemp, kPct, kCity, kDay,
                    kWeatherWord, kMinutes, kKwh, kPlease, kFav, kSlotCount };

  // The value index of `slot` in this sentence, drawn on first use (each slot is always
  // asked with the same n).
  uint64_t Value(Slot slot, uint64_t n) {
    const uint32_t bit = 1u << static_cast<int>(slot);
    if ((filled_ & bit) == 0) {
      values_[static_cast<size_t>(slot)] = n == 0 ? 0 : rng_.Uniform(n);
      filled_ |= bit;
    }
    return values_[static_cast<size_t>(slot)];
  }

  std::string_view PickName(Slot slot, const std::vector<std::string>& list) {
    return list[static_cast<size_t>(Value(slot, list.size()))];
  }

  void AppendSlot(std::string_view name, std::string& out) {
    if (name == "room") {
      out += PickName(Slot::kRoom, p_.rooms);
    } else if (name == "appliance") {
      out += PickName(Slot::kAppliance, p_.appliances);
    } else if (name == "name") {
      // The nickname of the same appliance (device profiles pair them by index).
      const auto i = static_cast<size_t>(Value(Slot::kAppliance, p_.appliances.size()));
      out += p_.device_names[i % p_.device_names.size()];
    } else if (name == "person") {
      out += PickName(Slot::kPerson, p_.people);
    } else if (name == "owner") {
      out += universal_ ? kNames[static_cast<size_t>(Value(Slot::kOwner, kNames.size()))] : std::string_view(p_.owner);
    } else if (name == "pet") {
      out += universal_ ? kPets[static_cast<size_t>(Value(Slot::kPet, kPets.size()))] : std::string_view(p_.pet);
    } else if (name == "city") {
      out += universal_ ? kCities[static_cast<size_t>(Value(Slot::kCity, kCities.size()))] : std::string_view(p_.city);
    } else if (name == "routine") {
      out += PickName(Slot::kRoutine, p_.routines);
    } else if (name == "time") {
      // Habits: a device's times cluster around its waking and evening hours.
      const uint64_t v = Value(Slot::kTime, 1u << 20);
      int hour;
      if (universal_) {
        hour = static_cast<int>(v % 24);
      } else {
        const int base = (v & 1) ? p_.wake_hour : p_.sleep_hour - 4;
        hour = (base + static_cast<int>((v >> 1) % 3) + 24) % 24;
      }
      AppendClock(out, hour, static_cast<int>(((v >> 8) % 4) * 15));
    } else if (name == "wake") {
      AppendClock(out, universal_ ? 5 + static_cast<int>(rng_.Uniform(5)) : p_.wake_hour, 0);
    } else if (name == "sleep") {
      AppendClock(out, universal_ ? 20 + static_cast<int>(rng_.Uniform(4)) : p_.sleep_hour, 0);
    } else if (name == "temp") {
      AppendInt(out, 16 + static_cast<int64_t>(Value(Slot::kTemp, 11)));
    } else if (name == "pct") {
      AppendInt(out, 5 * static_cast<int64_t>(Value(Slot::kPct, 21)));
    } else if (name == "minutes") {
      AppendInt(out, 5 * (1 + static_cast<int64_t>(Value(Slot::kMinutes, 12))));
    } else if (name == "kwh") {
      AppendInt(out, 2 + static_cast<int64_t>(Value(Slot::kKwh, 30)));
    } else if (name == "day") {
      out += kDays[static_cast<size_t>(Value(Slot::kDay, kDays.size()))];
    } else if (name == "weather") {
      out += kWeather[static_cast<size_t>(Value(Slot::kWeatherWord, kWeather.size()))];
    } else if (name == "please") {
      if (rng_.UniformDouble() < p_.politeness) {
        // A device mostly asks its own way; the generic corpus uses every prefix.
        if (universal_ || rng_.Uniform(4) == 0) {
          out += kPolitePrefixes[static_cast<size_t>(rng_.Uniform(kPolitePrefixes.size()))];
        } else {
          out += p_.polite_prefix;
        }
      }
    } else if (name == "fav") {
      const double chance = universal_ ? 0.3 : 0.6;
      if (!p_.favourite_words.empty() && rng_.UniformDouble() < chance) {
        out += p_.favourite_words[static_cast<size_t>(rng_.Uniform(p_.favourite_words.size()))];
      }
    }
  }

  const DeviceProfile& p_;
  const bool universal_;
  SplitMix64& rng_;
  uint32_t filled_ = 0;
  std::array<uint64_t, static_cast<size_t>(Slot::kSlotCount)> values_{};
};

// Seeds for independent streams derived from (fleet seed, device index, purpose).
uint64_t Mix(uint64_t a, uint64_t b) {
  SplitMix64 r(a ^ (b * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
  r.Next();
  return r.Next();
}

}  // namespace

// ---- SplitMix64 ---------------------------------------------------------------------------

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::Uniform(uint64_t n) {
  // Lemire-free rejection: accept values below the largest multiple of n.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do {
    v = Next();
  } while (v >= limit);
  return v % n;
}

double SplitMix64::UniformDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

size_t SplitMix64::Weighted(const std::vector<double>& weights) {
  double total = 0;
  for (double w : weights) total += w;
  double x = UniformDouble() * total;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (x < weights[i]) return i;
    x -= weights[i];
  }
  // Rounding left x at the very end: the last non-zero weight.
  for (size_t i = weights.size(); i-- > 0;) {
    if (weights[i] > 0) return i;
  }
  return 0;
}

const char* KindName(SentenceKind kind) {
  switch (kind) {
    case SentenceKind::kCommand:
      return "command";
    case SentenceKind::kStatus:
      return "status";
    case SentenceKind::kQuestion:
      return "question";
    case SentenceKind::kRoutine:
      return "routine";
    case SentenceKind::kStory:
      return "story";
    case SentenceKind::kCount:
      break;
  }
  return "unknown";
}

// ---- generic corpus ---------------------------------------------------------------------

std::vector<std::string> GenerateSentences(uint64_t seed, size_t count) {
  SplitMix64 rng(Mix(seed, 0xC0FFEE));
  SentenceWriter writer(UniversalProfile(), /*universal=*/true, rng);
  std::vector<std::string> out(count);
  for (std::string& s : out) writer.Write(writer.PickKind(), s);
  return out;
}

std::string GenerateCorpus(uint64_t seed, size_t target_bytes) {
  SplitMix64 rng(Mix(seed, 0xC0FFEE));
  SentenceWriter writer(UniversalProfile(), /*universal=*/true, rng);
  std::string out;
  out.reserve(target_bytes + 256);
  while (out.size() < target_bytes) {
    writer.Write(writer.PickKind(), out);
    out.push_back('\n');
  }
  return out;
}

// ---- per-device text ----------------------------------------------------------------------

DeviceProfile MakeDeviceProfile(uint64_t fleet_seed, uint64_t device_index) {
  SplitMix64 rng(Mix(Mix(fleet_seed, device_index), 0x9F0F11E));
  DeviceProfile p;
  p.fleet_seed = fleet_seed;
  p.device_index = device_index;
  std::vector<std::string> names = PickDistinct(rng, kNames, 4);
  p.owner = names[0];
  p.people.assign(names.begin() + 1, names.begin() + 1 + static_cast<std::ptrdiff_t>(1 + rng.Uniform(3)));
  p.pet = kPets[static_cast<size_t>(rng.Uniform(kPets.size()))];
  p.rooms = PickDistinct(rng, kRooms, 3 + static_cast<size_t>(rng.Uniform(3)));
  p.appliances = PickDistinct(rng, kAppliances, 4 + static_cast<size_t>(rng.Uniform(3)));
  p.device_names = PickDistinct(rng, kNicknames, p.appliances.size());
  p.wake_hour = 5 + static_cast<int>(rng.Uniform(5));
  p.sleep_hour = 21 + static_cast<int>(rng.Uniform(3));
  p.routines = PickDistinct(rng, kRoutines, 2 + static_cast<size_t>(rng.Uniform(3)));
  p.kind_weights = SkewedWeights(rng, static_cast<size_t>(SentenceKind::kCount), 0.08);
  for (const Templates& t : kTemplates) p.template_weights.push_back(SkewedWeights(rng, t.size(), 0.03));
  p.favourite_words = PickDistinct(rng, kFavourites, 1 + static_cast<size_t>(rng.Uniform(2)));
  p.politeness = 0.1 + 0.8 * rng.UniformDouble();
  p.polite_prefix = kPolitePrefixes[static_cast<size_t>(rng.Uniform(kPolitePrefixes.size()))];
  p.city = kCities[static_cast<size_t>(rng.Uniform(kCities.size()))];
  return p;
}

DeviceTextGenerator::DeviceTextGenerator(uint64_t fleet_seed, uint64_t device_index, DeviceTextOptions options)
    : profile_(MakeDeviceProfile(fleet_seed, device_index)),
      options_(options),
      rng_(Mix(Mix(fleet_seed, device_index), 0x5A3F1E5)),
      now_ms_(options.start_ms) {}

TextSample DeviceTextGenerator::Next() {
  SentenceWriter writer(profile_, /*universal=*/false, rng_);
  TextSample s;
  const SentenceKind kind = writer.PickKind();
  writer.Write(kind, s.text);
  const auto mean = static_cast<uint64_t>(options_.mean_interval_ms > 0 ? options_.mean_interval_ms : 1);
  now_ms_ += static_cast<int64_t>(mean / 2 + rng_.Uniform(mean));
  s.timestamp_ms = now_ms_;
  if (options_.labels) s.label = KindName(kind);
  return s;
}

std::vector<TextSample> DeviceTextGenerator::Generate(size_t count) {
  std::vector<TextSample> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) out.push_back(Next());
  return out;
}

std::vector<TextSample> GenerateDeviceSamples(uint64_t fleet_seed, uint64_t device_index, size_t count,
                                              const DeviceTextOptions& options) {
  return DeviceTextGenerator(fleet_seed, device_index, options).Generate(count);
}

}  // namespace flotilla::simulator
