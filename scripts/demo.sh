#!/usr/bin/env bash
# The main job (README): federated LoRA on a simulated fleet, for real.
#
#   1. installs the Debian packages (scripts/setup.sh) and builds `flotilla`;
#   2. pretrains a small base model with `flotilla model pretrain` on the synthetic generic
#      corpus and quantizes it to Q8_0 (about 1-2 minutes), or reuses the one a previous
#      run left in the demo directory;
#   3. `flotilla simulate`: a Mosquitto broker with mTLS and per-device ACLs, the
#      coordinator's round engine (SQLite journal + Store) and 1,000 real device agents,
#      each with its own identity, certificate and non-IID samples, run a few federated
#      rounds (local LoRA training, SecAgg+, new global adapter) and the held-out
#      perplexity of every published adapter is printed with the round timings;
#   4. leaves report.json and coordinator.db in the demo directory.
#
# Environment: FLOTILLA_DEMO_DIR (default ./demo-out), DEVICES (1000), ROUNDS (3),
# COHORT (100), LOCAL_STEPS (4), PRETRAIN_STEPS (400). Extra arguments go to
# `flotilla simulate` (see `flotilla simulate --help`).
#   scripts/demo.sh --smoke   runs the foundation smoke demo (`flotilla demo`) instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j "$(nproc)" flotilla
FLOTILLA=./build/cli/flotilla

if [[ "${1:-}" == "--smoke" ]]; then
  shift
  exec "$FLOTILLA" demo "$@"
fi

OUT="${FLOTILLA_DEMO_DIR:-$ROOT/demo-out}"
DEVICES="${DEVICES:-1000}"
ROUNDS="${ROUNDS:-3}"
COHORT="${COHORT:-100}"
LOCAL_STEPS="${LOCAL_STEPS:-4}"
PRETRAIN_STEPS="${PRETRAIN_STEPS:-400}"
MODEL_DIR="$OUT/model"
BASE="$MODEL_DIR/base-q8_0.gguf"
mkdir -p "$MODEL_DIR"

if [[ -f "$BASE" ]]; then
  echo "== reusing the base model $BASE (delete it to pretrain a new one)"
else
  echo "== pretraining a small base model ($PRETRAIN_STEPS steps; takes a minute or two)"
  "$FLOTILLA" data synth corpus --bytes 400000 --seed 2024 --out "$MODEL_DIR/corpus.txt"
  "$FLOTILLA" model pretrain --config tiny --tokenizer-vocab 320 --corpus "$MODEL_DIR/corpus.txt" \
    --steps "$PRETRAIN_STEPS" --seq 64 --batch 4 --lr 5e-3 --seed 3 --out "$MODEL_DIR/base-f32.gguf"
  "$FLOTILLA" model quantize "$MODEL_DIR/base-f32.gguf" "$BASE.tmp" --type q8_0
  mv "$BASE.tmp" "$BASE"
fi

echo "== simulating $DEVICES devices, $ROUNDS rounds, cohort $COHORT, $LOCAL_STEPS local steps"
status=0
"$FLOTILLA" simulate --devices "$DEVICES" --rounds "$ROUNDS" --cohort "$COHORT" --local-steps "$LOCAL_STEPS" \
  --model "$BASE" --out-dir "$OUT" "$@" || status=$?

echo
echo "Left for inspection in $OUT:"
echo "  report.json        per-round cohort, survivors, stage timings, bytes, perplexity"
echo "  coordinator.db     devices, rounds and their journal, participants, adapter versions, audit log (sqlite3)"
echo "  broker/mosquitto.log, devices/<id>/agent.db"
exit "$status"
