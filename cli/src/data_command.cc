// Local data tools, thin over flotilla_synthdata, flotilla_device (sample store) and
// flotilla_model (tokenizer trainer):
//   flotilla data synth corpus     generic pretraining corpus (N bytes, seeded)
//   flotilla data synth device     one device's non-IID samples → text/JSONL file or a store
//   flotilla data samples add      append samples to a device sample store
//   flotilla data samples stats    counts and bytes, train / held-out
//   flotilla data samples dump     print the texts of one split
//   flotilla model tokenizer train BPE tokenizer from a corpus → GGUF with the tokenizer keys
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "command_registry.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/file.h"
#include "flotilla/device/sample_store.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/tokenizer.h"
#include "flotilla/model/tokenizer_trainer.h"
#include "flotilla/simulator/synthetic_text.h"

namespace flotilla::cli {
namespace {

constexpr size_t kMaxInputBytes = size_t{1} << 31;

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// Splits on '\n' (a trailing '\r' is dropped), skipping empty lines.
std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> out;
  for (size_t p = 0; p < text.size();) {
    size_t e = text.find('\n', p);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(p, e - p);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) out.push_back(line);
    p = e + 1;
  }
  return out;
}

// ---- store options shared by every command that opens a store --------------------------

struct StoreFlags {
  std::string path;
  int64_t max_bytes = 64ll << 20;
  double max_age_days = 0;
  double held_out = 0.1;
  bool durable = false;
};

void AddStoreFlags(CLI::App* cmd, StoreFlags* f, bool required) {
  auto* opt = cmd->add_option("--store", f->path, "Sample store (SQLite file, created if missing)");
  if (required) opt->required();
  cmd->add_option("--max-bytes", f->max_bytes, "Retention: total text bytes kept (0 = no limit)")->capture_default_str();
  cmd->add_option("--max-age-days", f->max_age_days, "Retention: drop samples older than this (0 = no limit)")
      ->capture_default_str();
  cmd->add_option("--held-out", f->held_out, "Held-out fraction of the split, in [0, 1)")->capture_default_str();
  cmd->add_flag("--durable", f->durable, "fsync every append (synchronous=FULL)");
}

Result<std::unique_ptr<device::SampleStore>> OpenStore(const StoreFlags& f) {
  device::SampleStoreOptions o;
  o.max_total_bytes = f.max_bytes;
  o.max_age_ms = static_cast<int64_t>(f.max_age_days * 86'400'000.0);
  o.held_out_fraction = f.held_out;
  o.durable_appends = f.durable;
  if (o.max_total_bytes > 0 && o.max_text_bytes > o.max_total_bytes) o.max_text_bytes = o.max_total_bytes;
  return device::SampleStore::Open(f.path, o);
}

// ---- data synth ---------------------------------------------------------------------------

struct SynthCorpusOptions {
  uint64_t bytes = 1 << 20;
  uint64_t seed = 1;
  std::string out;
};

int RunSynthCorpus(const SynthCorpusOptions& o) {
  const std::string text = simulator::GenerateCorpus(o.seed, o.bytes);
  if (Status s = WriteFileAtomic(o.out, text); !s.ok()) return Fail(s);
  std::printf("wrote %zu bytes (%zu lines) to %s\n", text.size(), Lines(text).size(), o.out.c_str());
  return 0;
}

struct SynthDeviceOptions {
  uint64_t device = 0;
  uint64_t samples = 200;
  uint64_t seed = 1;
  std::string out;
  std::string format = "text";
  bool no_labels = false;
  StoreFlags store;
};

std::string JsonEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

int RunSynthDevice(const SynthDeviceOptions& o) {
  if (o.out.empty() == o.store.path.empty()) return Fail(InvalidArgumentError("give exactly one of --out and --store"));
  simulator::DeviceTextOptions dto;
  dto.labels = !o.no_labels;
  const std::vector<simulator::TextSample> samples = simulator::GenerateDeviceSamples(o.seed, o.device, o.samples, dto);
  const simulator::DeviceProfile p = simulator::MakeDeviceProfile(o.seed, o.device);
  std::printf("device %" PRIu64 " (fleet seed %" PRIu64 "): owner %s, %zu rooms, %zu appliances, city %s\n", o.device,
              o.seed, p.owner.c_str(), p.rooms.size(), p.appliances.size(), p.city.c_str());
  if (!o.out.empty()) {
    std::string text;
    for (const simulator::TextSample& s : samples) {
      if (o.format == "jsonl") {
        text += "{\"timestamp_ms\":" + std::to_string(s.timestamp_ms);
        if (s.label) text += ",\"label\":\"" + JsonEscape(*s.label) + "\"";
        text += ",\"text\":\"" + JsonEscape(s.text) + "\"}\n";
      } else {
        text += s.text + "\n";
      }
    }
    if (Status s = WriteFileAtomic(o.out, text); !s.ok()) return Fail(s);
    std::printf("wrote %zu samples (%zu bytes) to %s\n", samples.size(), text.size(), o.out.c_str());
    return 0;
  }
  auto store = OpenStore(o.store);
  if (!store.ok()) return Fail(store.status());
  std::vector<device::NewSample> batch;
  batch.reserve(samples.size());
  for (const simulator::TextSample& s : samples) {
    batch.push_back({s.text, s.timestamp_ms, s.label ? std::optional<std::string_view>(*s.label) : std::nullopt});
  }
  auto ids = (*store)->AppendBatch(batch);
  if (!ids.ok()) return Fail(ids.status());
  std::printf("appended %zu samples to %s\n", ids->size(), o.store.path.c_str());
  return 0;
}

// ---- data samples -------------------------------------------------------------------------

struct SamplesAddOptions {
  StoreFlags store;
  std::optional<std::string> text;
  std::optional<std::string> file;
  std::optional<std::string> label;
  std::optional<int64_t> timestamp_ms;
};

int RunSamplesAdd(const SamplesAddOptions& o) {
  if (o.text.has_value() == o.file.has_value()) return Fail(InvalidArgumentError("give exactly one of --text and --file"));
  std::string content;
  std::vector<std::string_view> texts;
  if (o.file.has_value()) {
    auto r = ReadFileString(*o.file, kMaxInputBytes);
    if (!r.ok()) return Fail(r.status());
    content = std::move(*r);
    texts = Lines(content);  // one sample per non-empty line
  } else {
    texts.push_back(*o.text);
  }
  const int64_t ts = o.timestamp_ms.value_or(RealClock().NowUnixMillis());
  std::vector<device::NewSample> batch;
  for (std::string_view t : texts) {
    batch.push_back({t, ts, o.label ? std::optional<std::string_view>(*o.label) : std::nullopt});
  }
  auto store = OpenStore(o.store);
  if (!store.ok()) return Fail(store.status());
  auto ids = (*store)->AppendBatch(batch);
  if (!ids.ok()) return Fail(ids.status());
  std::printf("appended %zu samples", ids->size());
  if (ids->size() == 1) std::printf(" (id %" PRId64 ")", (*ids)[0]);
  std::printf("\n");
  return 0;
}

struct SamplesStatsOptions {
  StoreFlags store;
  std::optional<std::string> label;
  bool apply_retention = false;
};

int RunSamplesStats(const SamplesStatsOptions& o) {
  auto store = OpenStore(o.store);
  if (!store.ok()) return Fail(store.status());
  if (o.apply_retention) {
    auto n = (*store)->ApplyRetention();
    if (!n.ok()) return Fail(n.status());
    std::printf("retention dropped %" PRId64 " samples\n", *n);
  }
  auto st = (*store)->Stats(o.label ? std::optional<std::string_view>(*o.label) : std::nullopt);
  if (!st.ok()) return Fail(st.status());
  std::printf("store      %s%s%s\n", o.store.path.c_str(), o.label ? "  label " : "", o.label ? o.label->c_str() : "");
  std::printf("samples    %" PRId64 " (%" PRId64 " bytes)\n", st->count, st->bytes);
  std::printf("train      %" PRId64 " (%" PRId64 " bytes)\n", st->train_count, st->train_bytes);
  std::printf("held-out   %" PRId64 " (%" PRId64 " bytes, fraction %.2f)\n", st->held_out_count, st->held_out_bytes,
              o.store.held_out);
  if (st->count > 0) std::printf("time range %" PRId64 " .. %" PRId64 " ms\n", st->oldest_ms, st->newest_ms);
  return 0;
}

struct SamplesDumpOptions {
  StoreFlags store;
  std::string split = "all";
  std::optional<std::string> label;
  int64_t limit = -1;
};

int RunSamplesDump(const SamplesDumpOptions& o) {
  device::SampleQuery q;
  if (o.split == "train") {
    q.split = device::SampleSplit::kTrain;
  } else if (o.split == "held-out") {
    q.split = device::SampleSplit::kHeldOut;
  } else if (o.split != "all") {
    return Fail(InvalidArgumentError("--split must be all, train or held-out"));
  }
  q.label = o.label;
  q.limit = o.limit;
  auto store = OpenStore(o.store);
  if (!store.ok()) return Fail(store.status());
  auto rows = (*store)->Read(q);
  if (!rows.ok()) return Fail(rows.status());
  for (const device::StoredSample& s : *rows) std::printf("%s\n", s.text.c_str());
  return 0;
}

// ---- model tokenizer train -------------------------------------------------------------------

struct TokenizerTrainCliOptions {
  std::string corpus;
  std::string out;
  bool lines = false;
  bool no_space_prefix = false;
  model::TokenizerTrainerOptions train;
};

int RunTokenizerTrain(const TokenizerTrainCliOptions& o) {
  auto text = ReadFileString(o.corpus, kMaxInputBytes);
  if (!text.ok()) return Fail(text.status());
  std::vector<std::string_view> docs;
  if (o.lines) {
    docs = Lines(*text);
  } else {
    docs.push_back(*text);
  }
  model::TokenizerTrainerOptions to = o.train;
  to.add_space_prefix = !o.no_space_prefix;
  model::TokenizerTrainingStats st;
  auto vocab = model::TrainTokenizer(docs, to, &st);
  if (!vocab.ok()) return Fail(vocab.status());
  model::GgufWriter w;
  model::WriteVocabulary(*vocab, w);
  if (Status s = w.WriteFile(o.out); !s.ok()) return Fail(s);

  auto tok = model::Tokenizer::Create(*vocab);
  if (!tok.ok()) return Fail(tok.status());
  int64_t tokens = 0;
  for (std::string_view d : docs) tokens += static_cast<int64_t>((*tok)->Encode(d, false).size());
  std::printf("corpus     %s: %" PRId64 " bytes, %" PRId64 " documents, %" PRId64 " distinct words\n",
              o.corpus.c_str(), st.corpus_bytes, st.documents, st.unique_words);
  std::printf("vocabulary %" PRId64 " tokens: 259 special+byte, %" PRId64 " merges, %" PRId64
              " characters, %" PRId64 " unused\n",
              static_cast<int64_t>(vocab->tokens.size()), st.merges, st.char_pieces, st.unused);
  std::printf("trained in %.2f s\n", st.seconds);
  std::printf("encoded    %" PRId64 " tokens: %.2f bytes/token\n", tokens,
              tokens > 0 ? static_cast<double>(st.corpus_bytes) / static_cast<double>(tokens) : 0.0);
  std::printf("wrote      %s\n", o.out.c_str());
  return 0;
}

CommandRegistration data_registration("data", [](CLI::App& root) {
  CLI::App* data = root.add_subcommand("data", "Synthetic text and the device's local sample store");
  data->require_subcommand(1);

  CLI::App* synth = data->add_subcommand("synth", "Deterministic synthetic text (test data, seeded)");
  synth->require_subcommand(1);
  auto co = std::make_shared<SynthCorpusOptions>();
  CLI::App* corpus = synth->add_subcommand("corpus", "Generic pretraining corpus, one sentence per line");
  corpus->add_option("--bytes", co->bytes, "Minimum size in bytes")->capture_default_str();
  corpus->add_option("--seed", co->seed, "Seed")->capture_default_str();
  corpus->add_option("--out", co->out, "Output text file")->required();
  corpus->callback([co] { ExitCode() = RunSynthCorpus(*co); });

  auto dvo = std::make_shared<SynthDeviceOptions>();
  CLI::App* dev = synth->add_subcommand("device", "One device's non-IID samples (its own places, names, habits)");
  dev->add_option("--device", dvo->device, "Device index in the fleet")->capture_default_str();
  dev->add_option("--samples", dvo->samples, "Number of samples")->capture_default_str();
  dev->add_option("--seed", dvo->seed, "Fleet seed")->capture_default_str();
  dev->add_option("--out", dvo->out, "Output file (one sample per line)");
  dev->add_option("--format", dvo->format, "Output file format: text|jsonl")
      ->check(CLI::IsMember({"text", "jsonl"}))
      ->capture_default_str();
  dev->add_flag("--no-labels", dvo->no_labels, "Do not label samples with their sentence kind");
  AddStoreFlags(dev, &dvo->store, /*required=*/false);
  dev->callback([dvo] { ExitCode() = RunSynthDevice(*dvo); });

  CLI::App* samples = data->add_subcommand("samples", "The device's local sample store (SQLite)");
  samples->require_subcommand(1);
  auto ao = std::make_shared<SamplesAddOptions>();
  CLI::App* add = samples->add_subcommand("add", "Append samples (one --text, or every line of --file)");
  AddStoreFlags(add, &ao->store, /*required=*/true);
  add->add_option("--text", ao->text, "Sample text");
  add->add_option("--file", ao->file, "Text file: one sample per non-empty line");
  add->add_option("--label", ao->label, "Label for the samples");
  add->add_option("--timestamp", ao->timestamp_ms, "Unix milliseconds (default: now)");
  add->callback([ao] { ExitCode() = RunSamplesAdd(*ao); });

  auto so = std::make_shared<SamplesStatsOptions>();
  CLI::App* stats = samples->add_subcommand("stats", "Counts and bytes, train and held-out");
  AddStoreFlags(stats, &so->store, /*required=*/true);
  stats->add_option("--label", so->label, "Only samples with this label");
  stats->add_flag("--apply-retention", so->apply_retention, "Drop samples beyond the retention limits first");
  stats->callback([so] { ExitCode() = RunSamplesStats(*so); });

  auto dpo = std::make_shared<SamplesDumpOptions>();
  CLI::App* dump = samples->add_subcommand("dump", "Print sample texts, one per line, oldest first");
  AddStoreFlags(dump, &dpo->store, /*required=*/true);
  dump->add_option("--split", dpo->split, "all|train|held-out")->capture_default_str();
  dump->add_option("--label", dpo->label, "Only samples with this label");
  dump->add_option("--limit", dpo->limit, "At most this many (-1 = all)")->capture_default_str();
  dump->callback([dpo] { ExitCode() = RunSamplesDump(*dpo); });
});

CommandRegistration tokenizer_registration("model.tokenizer", [](CLI::App& model) {
  CLI::App* tokenizer = model.add_subcommand("tokenizer", "Tokenizer tools");
  tokenizer->require_subcommand(1);
  auto o = std::make_shared<TokenizerTrainCliOptions>();
  CLI::App* train = tokenizer->add_subcommand("train", "Train a SentencePiece-style BPE tokenizer → GGUF metadata");
  train->add_option("--corpus", o->corpus, "Training text file")->required();
  train->add_option("--vocab-size", o->train.vocab_size, "Exact vocabulary size (>= 259)")->capture_default_str();
  train->add_option("--out", o->out, "Output .gguf (tokenizer keys only)")->required();
  train->add_option("--max-piece-chars", o->train.max_piece_chars, "Longest piece in characters")->capture_default_str();
  train->add_option("--min-frequency", o->train.min_frequency, "Stop merging below this pair count")
      ->capture_default_str();
  train->add_option("--coverage", o->train.character_coverage, "Character coverage in (0, 1]")->capture_default_str();
  train->add_flag("--lines", o->lines, "Each line is a separate document (as when samples are encoded one by one)");
  train->add_flag("--no-space-prefix", o->no_space_prefix, "Do not prefix documents with a space (add_space_prefix off)");
  train->callback([o] { ExitCode() = RunTokenizerTrain(*o); });
});

}  // namespace
}  // namespace flotilla::cli
