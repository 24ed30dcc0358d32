// PretrainBaseModel (fleet.h): a small base for simulations, made from the synthetic
// generic corpus with the engine's own tokenizer trainer and full-weight trainer.
#include <chrono>

#include "flotilla/model/gguf.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/tokenizer_trainer.h"
#include "flotilla/model/train.h"
#include "flotilla/model/trainer.h"
#include "flotilla/simulator/fleet.h"
#include "flotilla/simulator/synthetic_text.h"

namespace flotilla::simulator {

Result<BaseModelInfo> PretrainBaseModel(const BaseModelOptions& o) {
  if (o.out.empty()) return InvalidArgumentError("base model: no output path");
  if (o.steps < 1) return InvalidArgumentError("base model: steps must be >= 1");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string corpus = GenerateCorpus(o.seed, o.corpus_bytes);
  const std::vector<std::string> docs = model::SplitNonEmptyLines(corpus);
  const size_t n_held = std::max<size_t>(1, docs.size() / 20);
  if (docs.size() < 2 * n_held) return InvalidArgumentError("base model: corpus too small");
  const std::vector<std::string> train_docs(docs.begin(), docs.end() - static_cast<std::ptrdiff_t>(n_held));
  const std::vector<std::string> held_docs(docs.end() - static_cast<std::ptrdiff_t>(n_held), docs.end());

  FLT_ASSIGN_OR_RETURN(model::ModelConfig config, model::NamedConfig("tiny"));
  config.dim = o.dim;
  config.n_layers = o.n_layers;
  config.n_heads = o.n_heads;
  config.n_kv_heads = o.n_kv_heads;
  config.ffn_dim = o.ffn_dim;
  config.vocab_size = o.vocab_size;
  config.context_length = o.context_length;
  FLT_RETURN_IF_ERROR(config.Validate());

  model::TokenizerTrainerOptions to;
  to.vocab_size = o.vocab_size;
  std::vector<std::string_view> views(train_docs.begin(), train_docs.end());
  FLT_ASSIGN_OR_RETURN(model::Vocabulary vocab, model::TrainTokenizer(views, to));
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tokenizer, model::Tokenizer::Create(vocab));
  const model::TokenDataset train = model::TokenDataset::FromTexts(*tokenizer, train_docs);
  const model::TokenDataset held = model::TokenDataset::FromTexts(*tokenizer, held_docs);

  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::DenseLlamaWeights> weights, model::DenseLlamaWeights::Init(config, o.seed));
  model::TrainEngineOptions eo;
  eo.n_threads = o.threads;
  eo.max_seq_len = o.seq_len;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::TrainEngine> engine, model::TrainEngine::CreateFull(*weights, eo));
  model::TrainerOptions topt;
  topt.adamw.learning_rate = o.learning_rate;
  topt.adamw.beta2 = 0.99f;
  topt.adamw.weight_decay = 0.1f;
  topt.steps = o.steps;
  topt.warmup_steps = std::max<int64_t>(1, o.steps / 20);
  topt.seq_len = o.seq_len;
  topt.micro_batch = o.batch;
  topt.seed = o.seed;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::Trainer> trainer, model::Trainer::Create(*engine, topt));
  model::ProgressCallback cb;
  if (o.progress) {
    cb = [&o](const model::TrainProgress& p) {
      o.progress(p.step, p.total_steps, p.loss);
      return true;
    };
  }
  FLT_RETURN_IF_ERROR(trainer->Run(train, cb).status());
  FLT_ASSIGN_OR_RETURN(model::EvalResult eval, model::Evaluate(*engine, held, o.seq_len, 64));

  std::filesystem::path f32 = o.out;
  f32 += ".f32.gguf";
  FLT_RETURN_IF_ERROR(weights->Save(f32, vocab, "flotilla-sim-base"));
  {
    FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::GgufFile> file, model::GgufFile::Open(f32));
    FLT_ASSIGN_OR_RETURN(model::QuantRecipe recipe, model::NamedRecipe("q8_0"));
    FLT_RETURN_IF_ERROR(model::QuantizeModel(*file, recipe, o.out));
  }
  BaseModelInfo info;
  info.path = o.out;
  info.held_out_perplexity = eval.perplexity;
  info.parameters = config.ParameterCount();
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return info;
}

}  // namespace flotilla::simulator
