/* Minimal C11 program using the Flotilla device C API: load a GGUF model, tokenize a
 * prompt, stream generated text, print statistics.
 *
 *   generate MODEL.gguf "PROMPT" [MAX_TOKENS] [SEED]
 *
 * Greedy when SEED is omitted; seeded sampling (temperature 0.8, top-k 40) otherwise.
 * Exit code 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flotilla/flotilla.h"

static int print_piece(int32_t token, const char* piece, size_t piece_len, void* user_data) {
  int* count = (int*)user_data;
  (void)token;
  fwrite(piece, 1, piece_len, stdout);
  fflush(stdout);
  ++*count;
  return 0; /* keep going */
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS] [SEED]\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];
  const char* prompt = argv[2];

  flt_model_params mp = flt_model_default_params();
  flt_model* model = NULL;
  flt_status s = flt_model_load(path, &mp, &model);
  if (s != FLT_OK) {
    fprintf(stderr, "load failed: %s: %s\n", flt_status_string(s), flt_last_error());
    return 1;
  }

  int32_t tokens[256];
  size_t n_tokens = 0;
  s = flt_model_tokenize(model, prompt, strlen(prompt), 1, tokens, sizeof tokens / sizeof tokens[0], &n_tokens);
  if (s != FLT_OK) {
    fprintf(stderr, "tokenize failed: %s: %s\n", flt_status_string(s), flt_last_error());
    flt_model_free(model);
    return 1;
  }
  printf("prompt: %zu tokens (vocab %d, context %d)\n", n_tokens, (int)flt_model_vocab_size(model),
         (int)flt_model_n_ctx(model));

  flt_generate_params gp = flt_generate_default_params();
  gp.max_tokens = argc > 3 ? atoi(argv[3]) : 32;
  gp.stop_at_eos = 0;
  if (argc > 4) {
    gp.use_seed = 1;
    gp.seed = (uint64_t)strtoull(argv[4], NULL, 10);
  } else {
    gp.temperature = 0.0f; /* greedy */
  }

  char text[4096];
  size_t text_len = 0;
  int streamed = 0;
  flt_generate_stats stats;
  printf("output: ");
  s = flt_model_generate(model, prompt, strlen(prompt), &gp, text, sizeof text, &text_len, print_piece, &streamed,
                         &stats);
  printf("\n");
  if (s != FLT_OK && s != FLT_ERR_BUFFER_TOO_SMALL) {
    fprintf(stderr, "generate failed: %s: %s\n", flt_status_string(s), flt_last_error());
    flt_model_free(model);
    return 1;
  }
  printf("generated %d tokens (%zu bytes), prefill %.1f ms, decode %.1f tokens/s, stop reason %d\n",
         (int)stats.generated_tokens, text_len, stats.prefill_seconds * 1e3,
         stats.decode_seconds > 0 ? stats.generated_tokens / stats.decode_seconds : 0.0, (int)stats.stop_reason);
  flt_model_free(model);
  return streamed == stats.generated_tokens ? 0 : 1;
}
