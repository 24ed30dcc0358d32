#!/usr/bin/env bash
# End to end over the shipped CLI: pki init/issue, API tokens, `coordinator run` serving
# HTTP (auth enforced), device revoke of an unknown id failing, clean SIGTERM shutdown.
# Usage: coordinator_cli_e2e.sh /path/to/flotilla
set -euo pipefail
flotilla="$1"
dir="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-coord-cli.XXXXXX")"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
expect() {  # expect PATTERN TEXT...
  local pattern="$1"; shift
  grep -Eq -- "$pattern" <<<"$*" || { echo "FAIL: expected /$pattern/ in:"; echo "$*"; exit 1; }
}

out="$("$flotilla" pki init --dir "$dir/pki")"
expect "fleet CA:" "$out"
[[ "$(stat -c %a "$dir/pki/ca.key")" == 600 ]] || fail "ca.key is not 0600"
"$flotilla" pki init --dir "$dir/pki" >/dev/null 2>&1 && fail "second pki init must refuse"
out="$("$flotilla" pki issue --dir "$dir/pki" --device dev-0001)"
expect "dev-0001.crt" "$out"
[[ "$(stat -c %a "$dir/pki/devices/dev-0001.key")" == 600 ]] || fail "device key is not 0600"
"$flotilla" pki issue --dir "$dir/pki" --device "bad/id" >/dev/null 2>&1 && fail "bad device id accepted"

cat > "$dir/coordinator.json" <<JSON
{"data_dir": "data", "pki_dir": "pki", "http": {"listen": "127.0.0.1", "port": 0}}
JSON
token="$("$flotilla" coordinator token create --config "$dir/coordinator.json" --name e2e --scopes admin 2>/dev/null)"
expect "^flt_[0-9a-f]{16}_[0-9a-f]{64}$" "$token"
expect "e2e .*admin .*active" "$("$flotilla" coordinator token list --data-dir "$dir/data")"
enrol="$("$flotilla" coordinator token create-enrolment --data-dir "$dir/data" --device dev-0002 --groups eu 2>/dev/null)"
expect "^fle_" "$enrol"
"$flotilla" coordinator device revoke --data-dir "$dir/data" ghost >/dev/null 2>&1 && fail "revoking an unknown device succeeded"

"$flotilla" coordinator run --config "$dir/coordinator.json" >"$dir/run.log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -Eo 'HTTP http://127\.0\.0\.1:[0-9]+' "$dir/run.log" | head -1 | cut -d' ' -f2 || true)"
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || { cat "$dir/run.log"; fail "coordinator did not start"; }
expect '"status":"ok"' "$(curl -sf "$url/healthz")"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/api/v1/devices")" == 401 ]] || fail "no token must be 401"
expect '"devices":\[\]' "$(curl -sf -H "Authorization: Bearer $token" "$url/api/v1/devices")"
expect '"state":"created"' "$(curl -sf -H "Authorization: Bearer $token" -X POST -d '{"group":"eu"}' "$url/api/v1/rounds")"
expect 'flotilla_rounds\{state="created"\} 1' "$(curl -sf "$url/metrics")"
kill -TERM "$pid"
wait "$pid" || fail "coordinator exited non-zero on SIGTERM"
pid=""
expect "coordinator: stopped" "$(cat "$dir/run.log")"
echo "coordinator CLI e2e: all checks passed"
