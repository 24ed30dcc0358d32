#!/usr/bin/env bash
# End to end over the shipped CLI on the `tiny` config:
#   model create -> quantize -> info -> generate -> bench
# Usage: model_cli_e2e.sh /path/to/flotilla
set -euo pipefail
flotilla="$1"
dir="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-model-cli.XXXXXX")"
trap 'rm -rf "$dir"' EXIT

expect() {  # expect PATTERN TEXT...: fail unless the text matches the extended regex
  local pattern="$1"; shift
  if ! grep -Eq -- "$pattern" <<<"$*"; then
    echo "FAIL: expected /$pattern/ in:"; echo "$*"; exit 1
  fi
}

out="$("$flotilla" model create --config tiny --seed 3 --out "$dir/tiny-f32.gguf")"
expect "wrote .*tiny-f32.gguf: tiny config" "$out"

out="$("$flotilla" model quantize "$dir/tiny-f32.gguf" "$dir/tiny-q4_0.gguf" --type q4_0)"
expect "q4_0" "$out"

out="$("$flotilla" model info "$dir/tiny-q4_0.gguf" --tensors)"
expect "general.architecture +string +\"llama\"" "$out"
expect "blk.1.ffn_down.weight +q4_0 +\[128 x 64\]" "$out"
expect "llama model: Q4_0, dim 64, 2 layers, 4 heads / 2 kv heads" "$out"

out="$("$flotilla" model generate "$dir/tiny-q4_0.gguf" --prompt "Hello" -n 16 --seed 7 --threads 2 2>&1)"
expect "generated: 16 tokens, [0-9.]+ tokens/s" "$out"
# Same seed, same text.
again="$("$flotilla" model generate "$dir/tiny-q4_0.gguf" --prompt "Hello" -n 16 --seed 7 --threads 2 2>/dev/null)"
first="$("$flotilla" model generate "$dir/tiny-q4_0.gguf" --prompt "Hello" -n 16 --seed 7 --threads 1 2>/dev/null)"
[[ "$again" == "$first" ]] || { echo "FAIL: seeded generation differs between runs"; exit 1; }

out="$("$flotilla" model bench "$dir/tiny-q4_0.gguf" -p 16 -n 8 -r 2 -t 1,2 --cpu-path scalar)"
expect "\| +1 \| +pp16 \| +[0-9.]+ ± [0-9.]+ \|" "$out"
expect "\| +2 \| +tg8 \| +[0-9.]+ ± [0-9.]+ \|" "$out"
expect "CPU \(scalar\)" "$out"
expect "peak RSS: [0-9.]+ MiB" "$out"
expect "GB/s effective weight bandwidth" "$out"

# Errors are clear and exit non-zero.
if "$flotilla" model generate "$dir/missing.gguf" --prompt x 2>"$dir/err"; then echo "FAIL: missing file accepted"; exit 1; fi
expect "NOT_FOUND" "$(cat "$dir/err")"
if "$flotilla" model bench "$dir/tiny-q4_0.gguf" -p 64 -n 64 2>"$dir/err"; then echo "FAIL: oversized bench accepted"; exit 1; fi
expect "context" "$(cat "$dir/err")"

echo "model CLI e2e: all checks passed"
