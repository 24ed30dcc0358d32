// `flotilla model pretrain | finetune | eval`: training commands, thin over flotilla_model
// (TrainEngine, Trainer, tokenizer trainer, adapter files) and the device sample store.
//   pretrain  tokenizer + full-weight F32 training of a small base model from a corpus,
//             with checkpoints and resume; held-out perplexity vs. the unigram baseline
//   finetune  LoRA on a (quantized) base from a sample store or a text file → adapter GGUF
//   eval      mean loss / perplexity of a base (+ adapters) on held-out text
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "command_registry.h"
#include "flotilla/core/file.h"
#include "flotilla/core/random.h"
#include "flotilla/device/sample_store.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/finetune.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/tokenizer_trainer.h"
#include "flotilla/model/train.h"
#include "flotilla/model/trainer.h"

namespace flotilla::cli {
namespace {

using namespace flotilla::model;
namespace fs = std::filesystem;

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// SIGINT stops training at the next micro-batch (pretrain then writes a checkpoint).
std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) { g_interrupted.store(true); }

class InterruptGuard {
 public:
  InterruptGuard() { previous_ = std::signal(SIGINT, OnInterrupt); }
  ~InterruptGuard() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int) = SIG_DFL;
};

// ---- shared options -------------------------------------------------------------------

struct LoopOptions {
  int64_t steps = 200;
  int64_t seq = 128;
  int64_t batch = 4;
  int64_t accumulation = 1;
  float lr = 3e-3f;
  std::optional<int64_t> warmup;  // default: steps / 20
  float min_lr_ratio = 0.1f;
  float weight_decay = 0.1f;
  float clip = 1.0f;
  int threads = 0;
  uint64_t seed = 1;
  int64_t eval_windows = 0;  // 0 = all held-out windows
  std::string loss_csv;
};

void AddLoopOptions(CLI::App* cmd, LoopOptions* o) {
  cmd->add_option("--steps", o->steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--seq", o->seq, "Tokens per training sequence")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--accumulation", o->accumulation, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warm-up steps (default: steps / 20)");
  cmd->add_option("--min-lr-ratio", o->min_lr_ratio, "Cosine floor as a fraction of --lr")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--clip", o->clip, "Global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the data order (and of the initial weights for pretrain)")
      ->capture_default_str();
  cmd->add_option("--eval-windows", o->eval_windows, "Held-out windows to evaluate (0 = all)")->capture_default_str();
  cmd->add_option("--loss-csv", o->loss_csv, "Write the loss curve (step,loss: every step so far) to this file");
}

TrainerOptions ToTrainerOptions(const LoopOptions& o) {
  TrainerOptions t;
  t.adamw.learning_rate = o.lr;
  t.adamw.weight_decay = o.weight_decay;
  t.adamw.beta2 = 0.99f;  // small models, short runs: faster-adapting second moment
  t.steps = o.steps;
  t.warmup_steps = o.warmup.value_or(o.steps / 20);
  t.min_lr_ratio = o.min_lr_ratio;
  t.grad_clip = o.clip;
  t.seq_len = o.seq;
  t.micro_batch = o.batch;
  t.accumulation = o.accumulation;
  t.seed = o.seed;
  return t;
}

std::string Duration(double seconds) {
  char buf[32];
  const auto s = static_cast<long long>(seconds + 0.5);
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  }
  return buf;
}

// A one-line progress bar on stderr: redrawn in place on a terminal, one line per ~5% of
// the run otherwise (so logs stay readable).
class ProgressBar {
 public:
  ProgressBar(int64_t total, int64_t first_step, int64_t first_tokens)
      : total_(total), first_step_(first_step), first_tokens_(first_tokens), tty_(isatty(STDERR_FILENO) == 1),
        start_(std::chrono::steady_clock::now()) {}

  void Update(const TrainProgress& p) {
    const int64_t every = std::max<int64_t>(1, total_ / 20);
    if (!tty_ && p.step % every != 0 && p.step != total_) return;
    constexpr int kWidth = 28;
    const double frac = static_cast<double>(p.step) / static_cast<double>(std::max<int64_t>(1, total_));
    std::string bar(static_cast<size_t>(frac * kWidth), '#');
    bar.resize(kWidth, '.');
    const double secs = seconds();
    const double tps = secs > 0 ? static_cast<double>(p.tokens - first_tokens_) / secs : 0;
    const double per_step = secs / static_cast<double>(std::max<int64_t>(1, p.step - first_step_));
    std::fprintf(stderr, "%s[%s] step %lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %s%s",
                 tty_ ? "\r" : "", bar.c_str(), static_cast<long long>(p.step), static_cast<long long>(total_), p.loss,
                 p.learning_rate, p.grad_norm, tps, Duration(per_step * static_cast<double>(total_ - p.step)).c_str(),
                 tty_ ? "  " : "\n");
    std::fflush(stderr);
  }
  void Finish() const {
    if (tty_) std::fputc('\n', stderr);
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  int64_t total_, first_step_, first_tokens_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

struct LoopResult {
  std::vector<double> loss_curve;  // every step so far
  int64_t steps = 0;               // steps run by this command
  int64_t tokens = 0;              // tokens trained on by this command
  double seconds = 0;
};

// Runs the trainer to its last step (or to `stop_at` when > 0) with a progress bar. Every
// `checkpoint_every` steps (0 = never) the run pauses and `checkpoint` is called; on
// SIGINT the run stops at the next micro-batch, `checkpoint` is called once more and the
// result is Cancelled.
Result<LoopResult> TrainWithProgress(Trainer& trainer, const TokenDataset& data, int64_t total_steps,
                                     int64_t checkpoint_every, const std::function<Status()>& checkpoint,
                                     int64_t stop_at = 0) {
  const int64_t first_step = trainer.step(), first_tokens = trainer.tokens();
  ProgressBar bar(total_steps, first_step, first_tokens);
  InterruptGuard guard;
  g_interrupted.store(false);
  auto finish = [&](std::vector<double> curve) {
    bar.Finish();
    LoopResult out;
    out.loss_curve = std::move(curve);
    out.steps = trainer.step() - first_step;
    out.tokens = trainer.tokens() - first_tokens;
    out.seconds = bar.seconds();
    return out;
  };
  for (;;) {
    Result<TrainReport> r = trainer.Run(
        data,
        [&](const TrainProgress& p) {
          bar.Update(p);
          if (p.step == stop_at) return false;
          return checkpoint_every <= 0 || p.step % checkpoint_every != 0 || p.step >= total_steps;
        },
        &g_interrupted);
    if (r.ok()) return finish(std::move(r->loss_curve));
    if (r.status().code() != StatusCode::kCancelled) {
      bar.Finish();
      return r.status();
    }
    // At --stop-at the caller writes the final checkpoint, as at the end of a run.
    if (stop_at > 0 && trainer.step() == stop_at && !g_interrupted.load()) return finish(trainer.loss_curve());
    if (checkpoint) FLT_RETURN_IF_ERROR(checkpoint());
    if (g_interrupted.load()) {
      bar.Finish();
      return CancelledError("interrupted at step " + std::to_string(trainer.step()) +
                            (checkpoint ? " (checkpoint written)" : ""));
    }
  }
}

Status WriteLossCsv(const std::string& path, const std::vector<double>& curve) {
  std::string csv = "step,loss\n";
  char line[64];
  for (size_t i = 0; i < curve.size(); ++i) {
    std::snprintf(line, sizeof(line), "%zu,%.6f\n", i + 1, curve[i]);
    csv += line;
  }
  return WriteFileAtomic(path, csv);
}

// Ten evenly spaced points of the loss curve (each the mean over its stretch of steps).
void PrintLossCurve(const std::vector<double>& curve) {
  if (curve.empty()) return;
  const size_t points = std::min<size_t>(10, curve.size());
  std::printf("loss curve:");
  for (size_t k = 0; k < points; ++k) {
    const size_t b = k * curve.size() / points, e = (k + 1) * curve.size() / points;
    double sum = 0;
    for (size_t i = b; i < e; ++i) sum += curve[i];
    std::printf(" %zu:%.3f", e, sum / static_cast<double>(e - b));
  }
  std::printf("\n");
}

// The end-of-run summary both training commands print, and the optional loss CSV.
Status ReportRun(const LoopResult& run, const LoopOptions& loop) {
  std::printf("trained %lld steps, %lld tokens in %s (%.0f tokens/s)\n", static_cast<long long>(run.steps),
              static_cast<long long>(run.tokens), Duration(run.seconds).c_str(),
              run.seconds > 0 ? static_cast<double>(run.tokens) / run.seconds : 0.0);
  PrintLossCurve(run.loss_curve);
  return loop.loss_csv.empty() ? Status::Ok() : WriteLossCsv(loop.loss_csv, run.loss_curve);
}

std::vector<std::string_view> Views(const std::vector<std::string>& v) {
  return std::vector<std::string_view>(v.begin(), v.end());
}

// ---- pretrain ---------------------------------------------------------------------------

struct PretrainOptions {
  std::string config = "train";
  std::string corpus;
  std::optional<int64_t> tokenizer_vocab;
  std::string out = "model.gguf";
  std::string checkpoint_dir;
  int64_t checkpoint_every = 100;
  int64_t stop_at = 0;  // 0 = run to --steps
  bool resume = false;
  std::string name;
  double held_out_fraction = 0.05;
  LoopOptions loop;
};

fs::path CheckpointFile(const fs::path& dir, int64_t step, std::string_view ext) {
  char name[48];
  std::snprintf(name, sizeof(name), "step-%08lld.%s", static_cast<long long>(step), std::string(ext).c_str());
  return dir / name;
}

// The step of the newest complete checkpoint in `dir` (from its `latest` file), or
// nullopt when there is none.
Result<std::optional<int64_t>> LatestCheckpoint(const fs::path& dir) {
  const fs::path latest = dir / "latest";
  if (!fs::exists(latest)) return std::optional<int64_t>();
  FLT_ASSIGN_OR_RETURN(std::string text, ReadFileString(latest, 64));
  char* end = nullptr;
  const long long step = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || step < 0) return DataLossError("checkpoint pointer '" + latest.string() + "' is malformed");
  for (std::string_view ext : {"gguf", "state"}) {
    if (!fs::exists(CheckpointFile(dir, step, ext))) {
      return DataLossError("checkpoint " + CheckpointFile(dir, step, ext).string() + " named by " + latest.string() +
                           " is missing");
    }
  }
  return std::optional<int64_t>(step);
}

// Weights, then optimizer state, then the `latest` pointer (each atomic), so a crash at
// any point leaves the previous checkpoint usable. Older checkpoints are removed after.
Status WriteCheckpoint(const fs::path& dir, const DenseLlamaWeights& weights, const Vocabulary& vocab,
                       const std::string& name, const Trainer& trainer) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return PermissionDeniedError("cannot create checkpoint directory " + dir.string() + ": " + ec.message());
  const int64_t step = trainer.step();
  FLT_RETURN_IF_ERROR(weights.Save(CheckpointFile(dir, step, "gguf"), vocab, name));
  FLT_RETURN_IF_ERROR(trainer.SaveState(CheckpointFile(dir, step, "state")));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / "latest", std::to_string(step) + "\n"));
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string file = e.path().filename().string();
    if (file.starts_with("step-") && e.path().stem() != CheckpointFile(dir, step, "x").stem()) fs::remove(e.path(), ec);
  }
  return Status::Ok();
}

int RunPretrain(const PretrainOptions& o) {
  Result<ModelConfig> named = NamedConfig(o.config);
  if (!named.ok()) return Fail(named.status());
  ModelConfig config = *named;
  if (o.tokenizer_vocab) config.vocab_size = *o.tokenizer_vocab;
  if (o.loop.seq > config.context_length) {
    return Fail(InvalidArgumentError("--seq " + std::to_string(o.loop.seq) + " exceeds the config's context length " +
                                     std::to_string(config.context_length)));
  }
  if (!(o.held_out_fraction > 0 && o.held_out_fraction < 0.5)) {
    return Fail(InvalidArgumentError("--held-out must be in (0, 0.5)"));
  }
  const std::string name = o.name.empty() ? "flotilla-" + o.config + "-pretrained" : o.name;

  // Corpus: one document per line; the last held_out_fraction of the lines is held out.
  Result<std::string> corpus = ReadFileString(o.corpus);
  if (!corpus.ok()) return Fail(corpus.status());
  std::vector<std::string> docs = SplitNonEmptyLines(*corpus);
  if (docs.size() < 20) {
    return Fail(InvalidArgumentError("corpus " + o.corpus + " has " + std::to_string(docs.size()) +
                                     " non-empty lines; need at least 20"));
  }
  const auto n_held = static_cast<size_t>(std::ceil(static_cast<double>(docs.size()) * o.held_out_fraction));
  const std::vector<std::string> held_docs(docs.end() - static_cast<std::ptrdiff_t>(n_held), docs.end());
  docs.resize(docs.size() - n_held);
  std::printf("corpus: %s, %.2f MB, %zu training documents, %zu held out\n", o.corpus.c_str(),
              static_cast<double>(corpus->size()) / 1e6, docs.size(), held_docs.size());
  corpus->clear();
  corpus->shrink_to_fit();

  // Weights and vocabulary: from the last checkpoint, or a new tokenizer and seeded init.
  std::optional<int64_t> resume_step;
  if (o.resume) {
    if (o.checkpoint_dir.empty()) return Fail(InvalidArgumentError("--resume needs --checkpoint-dir"));
    Result<std::optional<int64_t>> latest = LatestCheckpoint(o.checkpoint_dir);
    if (!latest.ok()) return Fail(latest.status());
    resume_step = *latest;
    if (!resume_step) std::printf("no checkpoint in %s: starting from scratch\n", o.checkpoint_dir.c_str());
  }
  Vocabulary vocab;
  std::unique_ptr<DenseLlamaWeights> weights;
  if (resume_step) {
    const fs::path path = CheckpointFile(o.checkpoint_dir, *resume_step, "gguf");
    Result<std::unique_ptr<LlamaModel>> ckpt = LlamaModel::Open(path);
    if (!ckpt.ok()) return Fail(ckpt.status().WithContext("checkpoint " + path.string()));
    const ModelConfig& c = (*ckpt)->config();
    if (c.dim != config.dim || c.n_layers != config.n_layers || c.n_heads != config.n_heads ||
        c.n_kv_heads != config.n_kv_heads || c.ffn_dim != config.ffn_dim || c.vocab_size != config.vocab_size) {
      return Fail(InvalidArgumentError("checkpoint " + path.string() + " is not a '" + o.config + "' model"));
    }
    vocab = (*ckpt)->tokenizer().vocabulary();
    Result<std::unique_ptr<DenseLlamaWeights>> w = DenseLlamaWeights::FromModel(**ckpt);
    if (!w.ok()) return Fail(w.status());
    weights = std::move(*w);
    std::printf("resuming from %s (step %lld)\n", path.c_str(), static_cast<long long>(*resume_step));
  } else {
    TokenizerTrainerOptions to;
    to.vocab_size = config.vocab_size;
    TokenizerTrainingStats stats;
    Result<Vocabulary> v = TrainTokenizer(Views(docs), to, &stats);
    if (!v.ok()) return Fail(v.status());
    vocab = std::move(*v);
    std::printf("tokenizer: %lld tokens (%lld merges, %lld character pieces, %lld unused) in %.1f s\n",
                static_cast<long long>(vocab.tokens.size()), static_cast<long long>(stats.merges),
                static_cast<long long>(stats.char_pieces), static_cast<long long>(stats.unused), stats.seconds);
    Result<std::unique_ptr<DenseLlamaWeights>> w = DenseLlamaWeights::Init(config, o.loop.seed);
    if (!w.ok()) return Fail(w.status());
    weights = std::move(*w);
  }
  Result<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(vocab);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  const TokenDataset train = TokenDataset::FromTexts(**tokenizer, docs);
  const TokenDataset held = TokenDataset::FromTexts(**tokenizer, held_docs);
  double train_bytes = 0;
  for (const std::string& d : docs) train_bytes += static_cast<double>(d.size());
  docs.clear();
  std::printf("data: %lld training tokens (%.2f text bytes per token), %lld held-out tokens\n",
              static_cast<long long>(train.size()), train_bytes / static_cast<double>(std::max<int64_t>(1, train.size())),
              static_cast<long long>(held.size()));

  TrainEngineOptions eo;
  eo.n_threads = o.loop.threads;
  eo.max_seq_len = o.loop.seq;
  Result<std::unique_ptr<TrainEngine>> engine = TrainEngine::CreateFull(*weights, eo);
  if (!engine.ok()) return Fail(engine.status());
  Result<std::unique_ptr<Trainer>> trainer = Trainer::Create(**engine, ToTrainerOptions(o.loop));
  if (!trainer.ok()) return Fail(trainer.status());
  if (resume_step) {
    if (Status s = (*trainer)->LoadState(CheckpointFile(o.checkpoint_dir, *resume_step, "state")); !s.ok()) return Fail(s);
  }
  std::printf("model: '%s' config, %.2f M parameters, F32; %d threads; %lld steps of %lld x %lld x %lld tokens\n",
              o.config.c_str(), static_cast<double>(config.ParameterCount()) / 1e6, (*engine)->n_threads(),
              static_cast<long long>(o.loop.steps), static_cast<long long>(o.loop.accumulation),
              static_cast<long long>(o.loop.batch), static_cast<long long>(o.loop.seq));
  std::fflush(stdout);

  std::function<Status()> checkpoint;
  if (!o.checkpoint_dir.empty()) {
    checkpoint = [&] { return WriteCheckpoint(o.checkpoint_dir, *weights, vocab, name, **trainer); };
  }
  Result<LoopResult> run =
      TrainWithProgress(**trainer, train, o.loop.steps, o.checkpoint_every, checkpoint, o.stop_at);
  if (!run.ok()) return Fail(run.status());
  if (checkpoint) {
    if (Status s = checkpoint(); !s.ok()) return Fail(s);
  }
  if (Status s = ReportRun(*run, o.loop); !s.ok()) return Fail(s);
  if (Status s = weights->Save(o.out, vocab, name); !s.ok()) return Fail(s);
  std::printf("wrote %s (%.2f MiB)\n", o.out.c_str(), static_cast<double>(fs::file_size(o.out)) / (1024.0 * 1024.0));

  Result<EvalResult> eval = Evaluate(**engine, held, o.loop.seq, o.loop.eval_windows);
  if (!eval.ok()) return Fail(eval.status());
  const double unigram = UnigramPerplexity(train, held, config.vocab_size);
  std::printf("held-out: loss %.4f, perplexity %.3f over %lld tokens; unigram baseline perplexity %.3f (ratio %.3f)\n",
              eval->mean_loss, eval->perplexity, static_cast<long long>(eval->n_tokens), unigram,
              eval->perplexity / unigram);
  return 0;
}

// ---- data from a sample store or a text file ------------------------------------------

struct TextSplit {
  std::vector<std::string> train, held_out;
};

// `held_fraction` must be the fraction the host app uses: the split is a pure function of
// (sample id, store salt, fraction).
Result<std::unique_ptr<device::SampleStore>> OpenExistingStore(const std::string& path, double held_fraction) {
  // SampleStore::Open creates missing files; reading commands must not.
  if (!fs::exists(path)) return NotFoundError("sample store " + path + " does not exist");
  device::SampleStoreOptions so;
  so.held_out_fraction = held_fraction;
  so.max_total_bytes = 0;  // reading only: never apply a retention limit of our own
  return device::SampleStore::Open(path, so);
}

// The store's own train/held-out split (optionally one label), or the lines of a text
// file with the last `held_fraction` of them held out.
Result<TextSplit> LoadTexts(const std::string& samples, const std::string& label, const std::string& text,
                            double held_fraction) {
  TextSplit out;
  if (!samples.empty()) {
    FLT_ASSIGN_OR_RETURN(std::unique_ptr<device::SampleStore> store, OpenExistingStore(samples, held_fraction));
    std::optional<std::string_view> l;
    if (!label.empty()) l = label;
    FLT_ASSIGN_OR_RETURN(out.train, store->TrainTexts(l));
    FLT_ASSIGN_OR_RETURN(out.held_out, store->HeldOutTexts(l));
    return out;
  }
  FLT_ASSIGN_OR_RETURN(std::string content, ReadFileString(text));
  out.train = SplitNonEmptyLines(content);
  const auto n_held = static_cast<size_t>(std::floor(static_cast<double>(out.train.size()) * held_fraction));
  out.held_out.assign(out.train.end() - static_cast<std::ptrdiff_t>(n_held), out.train.end());
  out.train.resize(out.train.size() - n_held);
  return out;
}

// ---- finetune ---------------------------------------------------------------------------

struct FinetuneOptions {
  std::string model;
  std::string samples;
  std::string label;
  std::string text;
  double held_out_fraction = 0.1;  // of the text lines, or the store's split fraction
  std::string out;
  int64_t rank = 8;
  float alpha = 16.0f;
  std::string targets = "q,k,v,o";
  std::optional<uint64_t> frozen_a_seed;
  bool train_a = false;
  std::string name;
  uint64_t adapter_version = 0;
  LoopOptions loop;
};

int RunFinetune(const FinetuneOptions& o) {
  Result<std::unique_ptr<LlamaModel>> base = LlamaModel::Open(o.model);
  if (!base.ok()) return Fail(base.status());
  Result<std::string> base_hash = ModelFileSha256(o.model);
  if (!base_hash.ok()) return Fail(base_hash.status());
  Result<TextSplit> texts = LoadTexts(o.samples, o.label, o.text, o.held_out_fraction);
  if (!texts.ok()) return Fail(texts.status());
  const Tokenizer& tokenizer = (*base)->tokenizer();
  const TokenDataset train = TokenDataset::FromTexts(tokenizer, texts->train);
  const TokenDataset held = TokenDataset::FromTexts(tokenizer, texts->held_out);
  std::printf("data: %zu training samples (%lld tokens), %zu held out (%lld tokens)\n", texts->train.size(),
              static_cast<long long>(train.size()), texts->held_out.size(), static_cast<long long>(held.size()));

  LoraFinetuneOptions fo;
  fo.rank = o.rank;
  fo.alpha = o.alpha;
  fo.targets = o.targets;
  fo.frozen_a_seed = o.frozen_a_seed;
  fo.train_a = o.train_a;
  fo.base_sha256 = *base_hash;
  fo.name = o.name;
  fo.adapter_version = o.adapter_version;
  fo.trainer = ToTrainerOptions(o.loop);
  fo.n_threads = o.loop.threads;
  Result<std::unique_ptr<LoraFinetuneJob>> job = LoraFinetuneJob::Create(**base, fo);
  if (!job.ok()) return Fail(job.status());
  const LoraAdapter& adapter = (*job)->adapter();
  const LoraConfig& lc = adapter.config();
  std::printf("base: %s (%s, %s), LoRA rank %lld alpha %g on %s, %s A (seed %llu), %lld trainable values; %d threads\n",
              o.model.c_str(), std::string((*base)->name()).c_str(), (*base)->TypeLabel().c_str(),
              static_cast<long long>(lc.rank), static_cast<double>(lc.alpha), FormatProjections(lc.targets).c_str(),
              lc.frozen_a ? "frozen" : "trained", static_cast<unsigned long long>(lc.a_seed),
              static_cast<long long>(adapter.TrainableCount()), (*job)->engine().n_threads());

  std::optional<EvalResult> before;
  if (held.size() >= 2) {
    Result<EvalResult> e = (*job)->Evaluate(held, o.loop.eval_windows);
    if (!e.ok()) return Fail(e.status());
    before = *e;
    std::printf("held-out before: loss %.4f, perplexity %.3f\n", e->mean_loss, e->perplexity);
  }
  std::fflush(stdout);
  Result<LoopResult> run = TrainWithProgress((*job)->trainer(), train, o.loop.steps, 0, {});
  if (!run.ok()) return Fail(run.status());
  if (Status s = ReportRun(*run, o.loop); !s.ok()) return Fail(s);
  if (Status s = SaveAdapter(adapter, o.out); !s.ok()) return Fail(s);
  std::printf("wrote %s (base sha256 %s)\n", o.out.c_str(), base_hash->substr(0, 16).c_str());
  if (before) {
    Result<EvalResult> after = (*job)->Evaluate(held, o.loop.eval_windows);
    if (!after.ok()) return Fail(after.status());
    std::printf("held-out after: loss %.4f, perplexity %.3f (%+.1f%%)\n", after->mean_loss, after->perplexity,
                100.0 * (after->perplexity / before->perplexity - 1.0));
  }
  return 0;
}

// ---- eval -------------------------------------------------------------------------------

struct EvalOptions {
  std::string model;
  std::vector<std::string> adapters;
  std::vector<float> scales;
  std::string text;
  std::string samples;
  std::string split = "heldout";
  double held_out_fraction = 0.1;
  std::string label;
  int64_t seq = 128;
  int64_t max_windows = 0;
  int threads = 0;
};

int RunEval(const EvalOptions& o) {
  if (!o.scales.empty() && o.scales.size() != o.adapters.size()) {
    return Fail(InvalidArgumentError("give one --scale per --adapter (or none)"));
  }
  Result<std::unique_ptr<LlamaModel>> base = LlamaModel::Open(o.model);
  if (!base.ok()) return Fail(base.status());
  std::vector<LoraAdapter> adapters;
  if (!o.adapters.empty()) {
    Result<std::string> hash = ModelFileSha256(o.model);
    if (!hash.ok()) return Fail(hash.status());
    for (const std::string& path : o.adapters) {
      Result<LoraAdapter> a = LoadAdapter(path, **base, *hash);
      if (!a.ok()) return Fail(a.status().WithContext("adapter " + path));
      adapters.push_back(std::move(*a));
    }
  }
  LoraApplier applier;
  for (size_t i = 0; i < adapters.size(); ++i) applier.Add(&adapters[i], o.scales.empty() ? 1.0f : o.scales[i]);

  std::vector<std::string> texts;
  if (!o.samples.empty()) {
    Result<std::unique_ptr<device::SampleStore>> store = OpenExistingStore(o.samples, o.held_out_fraction);
    if (!store.ok()) return Fail(store.status());
    device::SampleQuery q;
    if (o.split == "heldout") {
      q.split = device::SampleSplit::kHeldOut;
    } else if (o.split == "train") {
      q.split = device::SampleSplit::kTrain;
    } else if (o.split != "all") {
      return Fail(InvalidArgumentError("--split must be heldout, train or all"));
    }
    if (!o.label.empty()) q.label = o.label;
    Result<std::vector<device::StoredSample>> samples = (*store)->Read(q);
    if (!samples.ok()) return Fail(samples.status());
    for (device::StoredSample& s : *samples) texts.push_back(std::move(s.text));
  } else {
    Result<std::string> content = ReadFileString(o.text);
    if (!content.ok()) return Fail(content.status());
    texts = SplitNonEmptyLines(*content);
  }
  const TokenDataset data = TokenDataset::FromTexts((*base)->tokenizer(), texts);
  Result<EvalResult> r =
      Evaluate(**base, applier.empty() ? nullptr : &applier, data, o.seq, o.max_windows, o.threads);
  if (!r.ok()) return Fail(r.status());
  std::printf("model %s%s: %zu texts, %lld tokens scored; mean loss %.4f, perplexity %.3f\n", o.model.c_str(),
              adapters.empty() ? "" : (" + " + std::to_string(adapters.size()) + " adapter(s)").c_str(), texts.size(),
              static_cast<long long>(r->n_tokens), r->mean_loss, r->perplexity);
  return 0;
}

// ---- registration -----------------------------------------------------------------------

// finetune and eval read either a sample store or a text file.
bool NeedData(const CLI::Option* samples, const CLI::Option* text) {
  if (samples->count() > 0 || text->count() > 0) return true;
  std::fprintf(stderr, "error: give --samples or --text\n");
  return false;
}

CommandRegistration pretrain_registration("model.pretrain", [](CLI::App& model) {
  auto o = std::make_shared<PretrainOptions>();
  o->loop.steps = 600;
  CLI::App* cmd = model.add_subcommand("pretrain", "Train a small base model (tokenizer + full F32 weights) from a corpus");
  cmd->add_option("--config", o->config, "Named config: tiny|train|15m|110m")->capture_default_str();
  cmd->add_option("--corpus", o->corpus, "Text corpus, one document per line (the last 5% is held out)")->required();
  cmd->add_option("--tokenizer-vocab", o->tokenizer_vocab, "Vocabulary size (default: the config's)");
  cmd->add_option("--out", o->out, "Output model .gguf (F32)")->capture_default_str();
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir, "Write checkpoints (weights + optimizer state) here");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue from the last checkpoint in --checkpoint-dir");
  cmd->add_option("--stop-at", o->stop_at, "Stop after this step (checkpoint, then exit; --resume continues)");
  cmd->add_option("--held-out", o->held_out_fraction, "Fraction of the corpus lines held out")->capture_default_str();
  cmd->add_option("--name", o->name, "general.name of the model");
  AddLoopOptions(cmd, &o->loop);
  cmd->callback([o] { ExitCode() = RunPretrain(*o); });
});

CommandRegistration finetune_registration("model.finetune", [](CLI::App& model) {
  auto o = std::make_shared<FinetuneOptions>();
  o->loop.steps = 100;
  o->loop.lr = 2e-3f;
  o->loop.weight_decay = 0.0f;
  CLI::App* cmd = model.add_subcommand("finetune", "LoRA fine-tuning on a frozen (quantized) base → adapter GGUF");
  cmd->add_option("--model", o->model, "Base model .gguf (any supported type; never modified)")->required();
  CLI::Option* samples = cmd->add_option("--samples", o->samples, "Device sample store (.sqlite): its train split");
  cmd->add_option("--device-label", o->label, "Only samples with this label (--samples)");
  CLI::Option* text = cmd->add_option("--text", o->text, "Text file, one sample per line (the last lines held out)");
  cmd->add_option("--held-out", o->held_out_fraction,
                  "Held-out fraction: of the --text lines, or the store's split fraction (as the host app uses)")
      ->capture_default_str();
  samples->excludes(text);
  cmd->add_option("--out", o->out, "Output adapter .gguf (llama.cpp LoRA layout)")->required();
  cmd->add_option("--rank", o->rank, "LoRA rank")->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "LoRA alpha (scale alpha/rank)")->capture_default_str();
  cmd->add_option("--targets", o->targets, "Projections: q,k,v,o,gate,up,down | attn | all")->capture_default_str();
  CLI::Option* seed = cmd->add_option("--frozen-a-seed", o->frozen_a_seed, "Frozen-A seed (default: random)");
  CLI::Option* train_a = cmd->add_flag("--train-a", o->train_a, "Train A too (random A from the OS CSPRNG)");
  seed->excludes(train_a);
  cmd->add_option("--name", o->name, "general.name of the adapter");
  cmd->add_option("--adapter-version", o->adapter_version, "Adapter version recorded in the file");
  AddLoopOptions(cmd, &o->loop);
  cmd->callback([o, samples, text] { ExitCode() = NeedData(samples, text) ? RunFinetune(*o) : 2; });
});

CommandRegistration eval_registration("model.eval", [](CLI::App& model) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = model.add_subcommand("eval", "Mean loss and perplexity of a model (+ adapters) on text");
  cmd->add_option("--model", o->model, "Base model .gguf")->required();
  cmd->add_option("--adapter", o->adapters, "LoRA adapter .gguf (repeatable)");
  cmd->add_option("--scale", o->scales, "Scale of each --adapter (default 1)");
  CLI::Option* text = cmd->add_option("--text", o->text, "Text file, one sample per line");
  CLI::Option* samples = cmd->add_option("--samples", o->samples, "Device sample store (.sqlite)");
  samples->excludes(text);
  cmd->add_option("--split", o->split, "heldout|train|all (--samples)")->capture_default_str();
  cmd->add_option("--held-out", o->held_out_fraction, "The store's held-out fraction (as the host app uses)")
      ->capture_default_str();
  cmd->add_option("--device-label", o->label, "Only samples with this label (--samples)");
  cmd->add_option("--seq", o->seq, "Tokens per evaluation window")->capture_default_str();
  cmd->add_option("--max-windows", o->max_windows, "Windows to score, spread over the data (0 = all)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->callback([o, samples, text] { ExitCode() = NeedData(samples, text) ? RunEval(*o) : 2; });
});

}  // namespace
}  // namespace flotilla::cli
