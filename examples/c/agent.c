/* C11 example of a device taking part in federated rounds through the Flotilla C API.
 *
 *   agent DEVICE_ID DATA_DIR BROKER_URI CA.pem DEVICE.pem DEVICE.key COORDINATOR.pem MODEL.gguf GROUPS [SECONDS]
 *
 * Creates the agent (mTLS to the broker, signed messages, local training on MODEL),
 * adds a few samples, then drives it from this loop with flt_agent_poll for SECONDS
 * (default 60), printing the status whenever a round ends. A firmware with its own
 * threads would call flt_agent_start / flt_agent_stop instead. Exit code 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flotilla/flotilla.h"

int main(int argc, char** argv) {
  if (argc < 10) {
    fprintf(stderr,
            "usage: %s DEVICE_ID DATA_DIR BROKER_URI CA.pem DEVICE.pem DEVICE.key COORDINATOR.pem MODEL.gguf GROUPS "
            "[SECONDS]\n",
            argv[0]);
    return 2;
  }
  flt_agent_params p = flt_agent_default_params();
  p.device_id = argv[1];
  p.data_dir = argv[2];
  p.broker_uri = argv[3];
  p.ca_file = argv[4];
  p.cert_file = argv[5];
  p.key_file = argv[6];
  p.coordinator_cert_file = argv[7];
  p.model_path = argv[8];
  p.groups = argv[9];
  p.samples.held_out_fraction = 0.2;
  const long seconds = argc > 10 ? atol(argv[10]) : 60;

  flt_agent* agent = NULL;
  flt_status s = flt_agent_create(&p, &agent);
  if (s != FLT_OK) {
    fprintf(stderr, "flt_agent_create failed: %s: %s\n", flt_status_string(s), flt_last_error());
    return 1;
  }
  static const char* const kTexts[] = {"morning run by the river", "coffee at the corner cafe",
                                       "evening train home at six", "lights off at eleven"};
  for (int i = 0; i < 32 && s == FLT_OK; ++i) {
    const char* t = kTexts[i % 4];
    s = flt_agent_add_sample(agent, t, strlen(t), NULL, 0);
  }
  if (s != FLT_OK) {
    fprintf(stderr, "flt_agent_add_sample failed: %s: %s\n", flt_status_string(s), flt_last_error());
    flt_agent_free(agent);
    return 1;
  }

  char last_round[FLT_ID_CAPACITY] = "";
  const time_t end = time(NULL) + seconds;
  while (time(NULL) < end) {
    s = flt_agent_poll(agent, 100, NULL);
    if (s != FLT_OK) {
      fprintf(stderr, "flt_agent_poll failed: %s: %s\n", flt_status_string(s), flt_last_error());
      break;
    }
    flt_round_info round;
    flt_agent_status status;
    if (flt_agent_last_round(agent, &round) != FLT_OK || flt_agent_status_get(agent, &status) != FLT_OK) continue;
    if (round.has_round && strcmp(round.state, "completed") == 0 && strcmp(round.round_id, last_round) != 0) {
      memcpy(last_round, round.round_id, sizeof last_round);
      printf("round %s completed: adapter %s, %llu rounds done, %llu messages accepted\n", round.round_id,
             status.adapter_version, (unsigned long long)status.rounds_completed,
             (unsigned long long)status.messages_accepted);
    }
  }
  flt_agent_free(agent);
  return s == FLT_OK ? 0 : 1;
}
