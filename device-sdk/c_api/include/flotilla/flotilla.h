/* Flotilla device C API for firmware written in C: on-device LLM inference, LoRA
 * adapters, the local sample store, on-device fine-tuning and the federated-learning
 * device agent. User guide with examples: docs/c-api.md.
 *
 * Conventions (llama.h style): opaque handles, flt_<noun>_<verb> functions, every
 * fallible call returns flt_status, outputs go to caller-provided buffers (pointer +
 * capacity), flt_*_default_params() gives a filled-in parameter struct. No C++
 * exception ever crosses this boundary. Strings are UTF-8 with explicit lengths.
 *
 * Thread safety: a flt_model may be used from several threads; flt_model_generate calls
 * on one model are serialized internally (one KV cache per model). flt_last_error() is
 * per thread.
 */
#ifndef FLOTILLA_FLOTILLA_H_
#define FLOTILLA_FLOTILLA_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Values are stable (append-only). */
typedef enum flt_status {
  FLT_OK = 0,
  FLT_ERR_INVALID_ARGUMENT = 1,   /* null pointer, bad parameter, malformed model file */
  FLT_ERR_NOT_FOUND = 2,          /* file does not exist */
  FLT_ERR_IO = 3,                 /* cannot read/map a file */
  FLT_ERR_UNSUPPORTED = 4,        /* valid but unsupported model feature or CPU path */
  FLT_ERR_CONTEXT_FULL = 5,       /* prompt does not fit in the context */
  FLT_ERR_BUFFER_TOO_SMALL = 6,   /* output truncated; see the function's comment */
  FLT_ERR_RESOURCE_EXHAUSTED = 7, /* out of memory or over a size limit */
  FLT_ERR_INTERNAL = 8,
  FLT_ERR_CANCELLED = 9,          /* a callback asked to stop; nothing was produced */
  FLT_ERR_BAD_STATE = 10          /* wrong time for this call (e.g. flt_agent_poll while started) */
} flt_status;

/* Static English name of a status ("ok", "invalid argument", ...). Never NULL. */
const char* flt_status_string(flt_status status);
/* Detail of the last failed call on this thread (what and where), "" if none. Valid
 * until the next API call on this thread. */
const char* flt_last_error(void);

typedef struct flt_model flt_model;

typedef struct flt_model_params {
  int32_t n_threads;    /* 0: all cores */
  int32_t n_ctx;        /* context length; 0: the model's */
  const char* cpu_path; /* NULL: best; else "scalar", "avx2", "avx512vnni", "neon", "neon-dotprod" */
} flt_model_params;

flt_model_params flt_model_default_params(void);

/* Memory-maps and validates a GGUF llama model and prepares one inference context.
 * On success *out_model owns everything; release it with flt_model_free. params may be
 * NULL (defaults). */
flt_status flt_model_load(const char* path, const flt_model_params* params, flt_model** out_model);
/* NULL is a no-op. */
void flt_model_free(flt_model* model);

int32_t flt_model_vocab_size(const flt_model* model);
int32_t flt_model_n_ctx(const flt_model* model);
int32_t flt_model_eos_token(const flt_model* model);

/* Text → token ids (BOS first if add_bos != 0). *n_tokens receives the count needed; if
 * it exceeds capacity, FLT_ERR_BUFFER_TOO_SMALL and only `capacity` ids are written.
 * tokens may be NULL when capacity is 0 (to query the size). */
flt_status flt_model_tokenize(const flt_model* model, const char* text, size_t text_len, int add_bos,
                              int32_t* tokens, size_t capacity, size_t* n_tokens);

/* Called once per generated token with its text piece (not NUL-terminated); return
 * non-zero to stop generating. */
typedef int (*flt_token_callback)(int32_t token, const char* piece, size_t piece_len, void* user_data);

typedef struct flt_generate_params {
  int32_t max_tokens;     /* tokens to generate at most */
  float temperature;      /* <= 0: greedy */
  int32_t top_k;          /* <= 0: off */
  float top_p;            /* >= 1: off */
  float repeat_penalty;   /* 1: off */
  int32_t repeat_last_n;  /* window of the repetition penalty */
  uint64_t seed;          /* sampling seed (not for security) ... */
  int use_seed;           /* ... used only if non-zero; else a random seed */
  int add_bos;            /* prepend BOS to the prompt */
  int stop_at_eos;        /* stop at the model's EOS token */
  const int32_t* stop_tokens; /* more stop tokens (may be NULL) */
  size_t n_stop_tokens;
} flt_generate_params;

flt_generate_params flt_generate_default_params(void);

/* Why generation ended. */
typedef enum flt_stop_reason {
  FLT_STOP_MAX_TOKENS = 0,
  FLT_STOP_TOKEN = 1,     /* EOS or a user stop token (not included in the text) */
  FLT_STOP_CALLBACK = 2,
  FLT_STOP_CONTEXT_FULL = 3,
  FLT_STOP_BUFFER_FULL = 4
} flt_stop_reason;

typedef struct flt_generate_stats {
  int32_t prompt_tokens;
  int32_t generated_tokens;
  double prefill_seconds;
  double decode_seconds;
  flt_stop_reason stop_reason;
} flt_generate_stats;

/* Starts a fresh sequence from `prompt` and writes the generated text (prompt not
 * included) to text[0..text_capacity), always NUL-terminated when text_capacity > 0;
 * *text_len gets its length. If the next piece does not fit, generation stops with
 * FLT_ERR_BUFFER_TOO_SMALL (the text so far is valid; stop_reason FLT_STOP_BUFFER_FULL).
 * text may be NULL (with text_capacity 0) to only stream through the callback.
 * callback, user_data, params (defaults), text_len and stats may be NULL.
 * FLT_ERR_CONTEXT_FULL if the prompt does not fit the context. */
flt_status flt_model_generate(flt_model* model, const char* prompt, size_t prompt_len,
                              const flt_generate_params* params, char* text, size_t text_capacity, size_t* text_len,
                              flt_token_callback callback, void* user_data, flt_generate_stats* stats);

/* Scores a fresh sequence: evaluates tokens[0..n_tokens) (with the adapter set, if any)
 * and writes the logits of the next token (flt_model_vocab_size floats) to logits.
 * FLT_ERR_BUFFER_TOO_SMALL if capacity < vocab size (nothing evaluated),
 * FLT_ERR_CONTEXT_FULL if n_tokens > flt_model_n_ctx, FLT_ERR_INVALID_ARGUMENT for no
 * tokens or an id outside the vocabulary. Serialized with flt_model_generate. */
flt_status flt_model_logits(flt_model* model, const int32_t* tokens, size_t n_tokens, float* logits, size_t capacity);

/* ---- LoRA adapters ------------------------------------------------------------------
 * Adapter files in llama.cpp's LoRA GGUF layout (see docs/lora.md). An adapter is loaded
 * for one model and applied during its generation as y = W x + scale * alpha/rank * B(A x). */
typedef struct flt_adapter flt_adapter;

/* Loads and validates a LoRA adapter for `model`: shapes and tensors against the base,
 * finite values, frozen-A stream, and, if the file records the SHA-256 of its base, that
 * it equals the SHA-256 of the model file (else FLT_ERR_UNSUPPORTED, "adapter is for
 * base ..."). FLT_ERR_INVALID_ARGUMENT for a malformed file (flt_last_error says what
 * and where). On success *out_adapter owns the adapter; release it with
 * flt_adapter_free. Thread-safe. */
flt_status flt_adapter_load(const flt_model* model, const char* path, flt_adapter** out_adapter);
/* NULL is a no-op. Safe while the adapter is set on a model: the model keeps its own
 * reference until it is cleared, replaced or the model is freed. */
void flt_adapter_free(flt_adapter* adapter);

/* Makes later flt_model_generate calls apply `adapter` at `scale` (1 = as trained),
 * replacing any adapter set before; NULL clears it (base model only). The adapter must
 * have been loaded for this model (FLT_ERR_INVALID_ARGUMENT otherwise, or for a
 * non-finite scale). Waits for a running generation on the model to finish. */
flt_status flt_model_set_adapter(flt_model* model, const flt_adapter* adapter, float scale);

/* Writes `adapter` to `path` (llama.cpp LoRA GGUF layout plus Flotilla's keys: frozen-A
 * seed, base SHA-256), atomically (temp file + rename). Loadable by flt_adapter_load and
 * `llama-cli --lora`. FLT_ERR_IO / FLT_ERR_NOT_FOUND when the file cannot be written. */
flt_status flt_adapter_save(const flt_adapter* adapter, const char* path);

/* ---- Local samples ------------------------------------------------------------------
 * The device's own text samples (they never leave the device): one SQLite file with
 * size/age retention (oldest dropped first) and a deterministic train/held-out split
 * (a keyed hash of the sample id; a sample never changes side). All calls on one
 * flt_samples are thread-safe. Several handles (or processes) may open one file. */
typedef struct flt_samples flt_samples;

typedef struct flt_samples_params {
  int64_t max_total_bytes;  /* text bytes kept (oldest dropped beyond); 0 = no limit. Default 64 MiB */
  int64_t max_age_ms;       /* samples older than this are dropped; 0 = no limit (default) */
  int64_t max_text_bytes;   /* one sample's text; default 16 KiB */
  int64_t max_label_bytes;  /* default 128 */
  double held_out_fraction; /* in [0, 1); default 0.1 */
  int durable_appends;      /* non-zero: fsync every add (slower, flash wear); default 0 (WAL, crash-safe) */
} flt_samples_params;

flt_samples_params flt_samples_default_params(void);

/* Opens or creates the store at `path`. params may be NULL (defaults). On success
 * *out_samples owns the store; release it with flt_samples_close.
 * FLT_ERR_INVALID_ARGUMENT for bad params, FLT_ERR_IO when the file cannot be opened. */
flt_status flt_samples_open(const char* path, const flt_samples_params* params, flt_samples** out_samples);
/* NULL is a no-op. */
void flt_samples_close(flt_samples* samples);

/* Stores one sample: `text` (text_len bytes, UTF-8, non-empty, at most max_text_bytes),
 * an optional NUL-terminated UTF-8 `label` (NULL = none) and its time in Unix
 * milliseconds (0 = now), then applies retention. *out_id (may be NULL) gets its id.
 * FLT_ERR_INVALID_ARGUMENT for invalid UTF-8, empty or oversized text or label, or a
 * timestamp already older than max_age_ms (flt_last_error says what and where; nothing
 * is stored). */
flt_status flt_samples_add(flt_samples* samples, const char* text, size_t text_len, const char* label,
                           int64_t timestamp_ms, int64_t* out_id);

/* Samples in the train and held-out parts (either pointer may be NULL). */
flt_status flt_samples_count(flt_samples* samples, int64_t* train_count, int64_t* held_out_count);

typedef struct flt_samples_stats {
  int64_t count, bytes;                     /* all samples, text bytes */
  int64_t train_count, train_bytes;
  int64_t held_out_count, held_out_bytes;
  int64_t oldest_ms, newest_ms;             /* 0 when empty */
} flt_samples_stats;
flt_status flt_samples_get_stats(flt_samples* samples, flt_samples_stats* stats);

/* Removes every sample. *out_removed (may be NULL) gets how many. */
flt_status flt_samples_clear(flt_samples* samples, int64_t* out_removed);

/* ---- On-device fine-tuning ----------------------------------------------------------
 * LoRA on the frozen (quantized) base, trained on a sample store's train part and
 * measured on its held-out part, exactly as `flotilla model finetune --samples` does. */
typedef struct flt_finetune_params {
  int32_t rank;            /* LoRA rank; default 8 */
  float alpha;             /* scale alpha/rank; default 16 */
  const char* targets;     /* projections "q,k,v,o" (default), "all", "attn", any of q,k,v,o,gate,up,down */
  uint64_t frozen_a_seed;  /* A is regenerated from this seed ... */
  int use_frozen_a_seed;   /* ... if non-zero; else a seed from the OS CSPRNG */
  int32_t steps;           /* optimizer steps; default 100 */
  float learning_rate;     /* peak (warm-up steps/20, cosine to 10%); default 2e-3 */
  int32_t batch;           /* sequences per step; default 4 */
  int32_t seq_len;         /* tokens per sequence; default 128 (at most the model's context) */
  float grad_clip;         /* global L2 norm; <= 0 off; default 1 */
  int32_t n_threads;       /* 0: all cores */
  uint64_t memory_budget_bytes; /* activations + scratch; 0 = no limit (recomputes layers to fit) */
  uint64_t data_seed;      /* order of the training windows; default 1 */
  int32_t eval_windows;    /* held-out windows scored before/after; 0 = all (default) */
  const char* label;       /* train and evaluate only samples with this label; NULL = all */
} flt_finetune_params;

flt_finetune_params flt_finetune_default_params(void);

/* Called after every optimizer step (step = 1..total_steps) with the step's mean token
 * loss and its learning rate; return non-zero to cancel. Runs on the calling thread. */
typedef int (*flt_progress_callback)(int32_t step, int32_t total_steps, float loss, float learning_rate,
                                     void* user_data);

typedef struct flt_finetune_stats {
  int32_t steps;            /* steps run */
  int64_t tokens;           /* target tokens trained on */
  double seconds;           /* training wall time */
  float first_loss;         /* mean loss of step 1 */
  float last_loss;          /* mean loss of the last step */
  int64_t train_samples, held_out_samples;
  double held_out_perplexity_before; /* 0 when the held-out part has < 2 tokens */
  double held_out_perplexity_after;
} flt_finetune_stats;

/* Trains a new LoRA adapter for `model` on `samples`. On success *out_adapter owns it
 * (flt_model_set_adapter applies it, flt_adapter_save writes it, flt_adapter_free
 * releases it). The base model is only read: generation on it may run meanwhile.
 * params (defaults), progress, stats may be NULL. FLT_ERR_CANCELLED when `progress`
 * returned non-zero (*out_adapter stays NULL; stats say how far it got);
 * FLT_ERR_INVALID_ARGUMENT for bad params or too little training text (fewer than
 * seq_len + 1 tokens); FLT_ERR_RESOURCE_EXHAUSTED when the memory budget is too small. */
flt_status flt_finetune(const flt_model* model, flt_samples* samples, const flt_finetune_params* params,
                        flt_progress_callback progress, void* user_data, flt_adapter** out_adapter,
                        flt_finetune_stats* stats);

/* ---- Federated-learning device agent ------------------------------------------------
 * One device identity in a fleet: connects to the MQTT broker with mTLS, keeps presence,
 * enrols, takes part in federated rounds (local LoRA training on its own samples, SecAgg+
 * masking, encrypted upload) and installs each new global adapter. Drive it either with
 * flt_agent_start (its own thread) or by calling flt_agent_poll from your loop — not
 * both. flt_agent_add_sample, flt_agent_status and flt_agent_last_round are thread-safe
 * and may be called at any time; the other calls belong to one owner thread. */
typedef struct flt_agent flt_agent;

typedef struct flt_agent_params {
  const char* device_id;              /* required; = the certificate CN = MQTT client id */
  const char* data_dir;               /* required; agent state and samples live here (created) */
  const char* broker_uri;             /* required; "ssl://host:8883" (tcp:// only without TLS files) */
  const char* ca_file;                /* PEM: the fleet CA (broker and HTTPS trust) */
  const char* cert_file;              /* PEM: this device's certificate (mTLS) */
  const char* key_file;               /* PEM: this device's ECDSA P-256 key (mTLS + message signing) */
  const char* coordinator_cert_file;  /* required; PEM certificate of the coordinator's identity key */
  const char* coordinator_id;         /* its identity; NULL = "coordinator" */
  const char* groups;                 /* comma-separated groups for round announcements; NULL = none */
  const char* enrolment_token;        /* one-time token from the operator; NULL = none */
  const char* model_path;             /* required; the base GGUF model trained on */
  const char* base_model_version;     /* NULL = "base" (the sha256 of model_path identifies it) */
  const char* firmware_version;       /* reported; NULL = "" */
  /* Local training (the round's config sets rank, targets, steps, lr, ...). */
  int32_t train_seq_len;              /* tokens per training window; default 32 */
  int32_t train_threads;              /* engine threads per training run; default 1 */
  uint64_t train_memory_budget_bytes; /* 0 = no limit */
  int32_t worker_threads;             /* threads for training and crypto; 0 = inside poll; default 1 */
  flt_samples_params samples;         /* the agent's sample store (<data_dir>/samples.sqlite) */
  int32_t keepalive_seconds;          /* MQTT keepalive; default 60 */
  int32_t connect_timeout_ms;         /* per connect attempt; default 10000 */
} flt_agent_params;

flt_agent_params flt_agent_default_params(void);

/* Checks the params, loads the model, keys and certificates, opens the data directory
 * and builds the agent; does not connect yet. On success *out_agent owns it; release it
 * with flt_agent_free. FLT_ERR_INVALID_ARGUMENT names the bad or missing parameter
 * (a model is required: there is no training stand-in in production);
 * FLT_ERR_NOT_FOUND / FLT_ERR_IO for unreadable files. */
flt_status flt_agent_create(const flt_agent_params* params, flt_agent** out_agent);
/* Stops the thread if running, disconnects cleanly, frees. NULL is a no-op. */
void flt_agent_free(flt_agent* agent);

/* Adds a training sample to the agent's store (same rules as flt_samples_add). Rounds
 * after this see it. Thread-safe. */
flt_status flt_agent_add_sample(flt_agent* agent, const char* text, size_t text_len, const char* label,
                                int64_t timestamp_ms);

/* Connects (in the background; reconnects with jittered back-off) and runs the agent on
 * its own thread until flt_agent_stop. FLT_ERR_BAD_STATE if already started. */
flt_status flt_agent_start(flt_agent* agent);
/* Stops the agent's thread and disconnects cleanly (presence goes offline). A round in
 * progress is abandoned. Start (or poll) again to reconnect. */
flt_status flt_agent_stop(flt_agent* agent);
/* The alternative to start: connects on the first call, then handles what is due,
 * waiting up to timeout_ms for the first event. *out_events (may be NULL) gets how many
 * were handled. Training and crypto run on the worker threads (worker_threads > 0) or
 * inside this call. FLT_ERR_BAD_STATE while started. */
flt_status flt_agent_poll(flt_agent* agent, int32_t timeout_ms, int32_t* out_events);

typedef enum flt_connection_state {
  FLT_CONNECTION_DISCONNECTED = 0,
  FLT_CONNECTION_CONNECTING = 1,
  FLT_CONNECTION_CONNECTED = 2,
  FLT_CONNECTION_RECONNECTING = 3
} flt_connection_state;

#define FLT_ID_CAPACITY 96     /* ids and versions: at most 64 characters of A-Z a-z 0-9 . _ - (+ prefixes) */
#define FLT_DETAIL_CAPACITY 256

typedef struct flt_agent_status {
  flt_connection_state connection;
  int connected;                            /* connection == FLT_CONNECTION_CONNECTED */
  int enrolled;                             /* the coordinator accepted the enrolment */
  int running;                              /* started (own thread) */
  char adapter_version[FLT_ID_CAPACITY];    /* current global adapter; "" = none yet */
  uint64_t rounds_completed;
  uint64_t rounds_aborted;
  uint64_t messages_accepted;
  uint64_t messages_rejected;               /* bad topic, signature, binding, malformed, wrong round */
  uint64_t messages_duplicate;              /* QoS 1 redeliveries and replays */
  int64_t train_samples, held_out_samples;  /* in the agent's store */
} flt_agent_status;

/* A snapshot (copied into *status; strings NUL-terminated, truncated to the arrays). */
flt_status flt_agent_status_get(const flt_agent* agent, flt_agent_status* status);

typedef struct flt_round_info {
  int has_round;                        /* 0: no round seen yet (the rest is empty) */
  char round_id[FLT_ID_CAPACITY];
  char state[32];    /* checked_in, accepted, declined, advertised, shares_sent, masked_input_sent,
                        consistency_signed, unmask_sent, completed, aborted, abandoned, not_selected */
  char detail[FLT_DETAIL_CAPACITY];     /* why it ended, if it did not complete (truncated) */
} flt_round_info;

/* The last round this agent took part in (copied; fixed-size NUL-terminated arrays). */
flt_status flt_agent_last_round(const flt_agent* agent, flt_round_info* info);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOTILLA_FLOTILLA_H_ */
