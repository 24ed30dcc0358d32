/* C11 example of on-device fine-tuning with the Flotilla C API: store text samples,
 * train a LoRA adapter on them with a progress callback, save it, apply it, generate.
 *
 *   finetune MODEL.gguf SAMPLES.sqlite ADAPTER_OUT.gguf [STEPS]
 *
 * Adds a few dozen short samples to the store (a real app adds the user's own text as
 * it arrives), trains STEPS steps (default 20), prints the held-out perplexity before
 * and after. Exit code 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flotilla/flotilla.h"

static int on_progress(int32_t step, int32_t total_steps, float loss, float learning_rate, void* user_data) {
  (void)user_data;
  printf("step %d/%d loss %.4f lr %.2e\n", (int)step, (int)total_steps, (double)loss, (double)learning_rate);
  return 0; /* non-zero would cancel: flt_finetune returns FLT_ERR_CANCELLED and no adapter */
}

static int fail(const char* what, flt_status s) {
  fprintf(stderr, "%s failed: %s: %s\n", what, flt_status_string(s), flt_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.gguf SAMPLES.sqlite ADAPTER_OUT.gguf [STEPS]\n", argv[0]);
    return 2;
  }
  flt_model* model = NULL;
  flt_status s = flt_model_load(argv[1], NULL, &model);
  if (s != FLT_OK) return fail("flt_model_load", s);

  flt_samples_params sp = flt_samples_default_params();
  sp.held_out_fraction = 0.25;
  flt_samples* samples = NULL;
  s = flt_samples_open(argv[2], &sp, &samples);
  if (s != FLT_OK) {
    flt_model_free(model);
    return fail("flt_samples_open", s);
  }
  for (int i = 0; i < 48; ++i) {
    char text[96];
    int n = snprintf(text, sizeof text, "the kitchen lights turn on at %d:%02d every day", 6 + i % 3, (i * 7) % 60);
    s = flt_samples_add(samples, text, (size_t)n, "home", 0 /* now */, NULL);
    if (s != FLT_OK) break;
  }
  int64_t train_count = 0, held_out_count = 0;
  if (s == FLT_OK) s = flt_samples_count(samples, &train_count, &held_out_count);
  if (s != FLT_OK) {
    flt_samples_close(samples);
    flt_model_free(model);
    return fail("flt_samples_add", s);
  }
  printf("samples: %lld train, %lld held out\n", (long long)train_count, (long long)held_out_count);

  flt_finetune_params fp = flt_finetune_default_params();
  fp.steps = argc > 4 ? atoi(argv[4]) : 20;
  fp.seq_len = 32;
  fp.batch = 2;
  fp.learning_rate = 1e-2f;
  fp.targets = "q,k,v,o";
  flt_adapter* adapter = NULL;
  flt_finetune_stats stats;
  s = flt_finetune(model, samples, &fp, on_progress, NULL, &adapter, &stats);
  flt_samples_close(samples);
  if (s != FLT_OK) {
    flt_model_free(model);
    return fail("flt_finetune", s);
  }
  printf("trained %d steps: loss %.4f -> %.4f, held-out perplexity %.3f -> %.3f\n", (int)stats.steps,
         (double)stats.first_loss, (double)stats.last_loss, stats.held_out_perplexity_before,
         stats.held_out_perplexity_after);

  s = flt_adapter_save(adapter, argv[3]);
  if (s == FLT_OK) s = flt_model_set_adapter(model, adapter, 1.0f);
  flt_adapter_free(adapter); /* the model keeps its own reference while the adapter is set */
  if (s != FLT_OK) {
    flt_model_free(model);
    return fail("flt_adapter_save / flt_model_set_adapter", s);
  }
  flt_generate_params gp = flt_generate_default_params();
  gp.temperature = 0.0f;
  gp.max_tokens = 16;
  char text[256];
  size_t text_len = 0;
  s = flt_model_generate(model, "the kitchen", 11, &gp, text, sizeof text, &text_len, NULL, NULL, NULL);
  flt_model_free(model);
  if (s != FLT_OK) return fail("flt_model_generate", s);
  printf("with the adapter: \"the kitchen%s\"\nwrote %s\n", text, argv[3]);
  return 0;
}
