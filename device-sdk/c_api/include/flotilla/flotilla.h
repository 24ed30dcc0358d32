/* Flotilla device C API: on-device LLM inference for firmware written in C.
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
  FLT_ERR_INTERNAL = 8
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOTILLA_FLOTILLA_H_ */
