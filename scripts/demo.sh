#!/usr/bin/env bash
# The local demo: Redis, tracegen as Tempo with a week of history, the ingester (backfill, then
# polling), the recomputer and the checker, then four explained verdicts; then the same history
# sent again as OTLP (every span of every trace, so span baselines form; the roots are duplicates
# of the backfilled ones) and one trace analysis naming the slow span behind a slow trace.
#
#   scripts/demo.sh run    # foreground until Ctrl-C, then stops everything it started (just demo)
#   scripts/demo.sh up     # the same in the background, state in .demo/          (just up)
#   scripts/demo.sh down   # stops what `up` started                              (just down)
#   scripts/demo.sh logs   # follows the logs of what `up` started                (just logs)
#
# Environment: DEMO_TIMEZONE (default Asia/Taipei), DEMO_SEED (42), DEMO_HISTORY (7d),
# DEMO_WAIT (seconds to wait for baselines, 300; span baselines get as long again),
# DEMO_KEEP=1 keeps `run`'s temp dir,
# DEMO_BUILD=0 skips the build and uses target/release (or $CARGO_TARGET_DIR/release) as it is.
# Needs bash, curl and cargo; installs redis-server with apt-get when it is missing.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UP_DIR="$ROOT/.demo"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TIMEZONE="${DEMO_TIMEZONE:-Asia/Taipei}"
SEED="${DEMO_SEED:-42}"
HISTORY="${DEMO_HISTORY:-7d}"
WAIT_SECS="${DEMO_WAIT:-300}"
# The endpoints whose baselines the wait watches (tracegen's demo profile; admin is the rare one).
WATCHED=("checkout|POST /api/checkout" "checkout|GET /api/cart" "search|GET /api/search"
  "catalog|GET /api/products/{id}" "payments|POST /api/pay" "inventory|GET /api/stock")

# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"

# --- prerequisites ---------------------------------------------------------------------------

prerequisites() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  have_redis_server || missing+=(redis-server)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  REDIS_SERVER="$(command -v redis-server || echo /usr/sbin/redis-server)"
  [[ -x $REDIS_SERVER ]] || die "redis-server is still missing after the install"
}

build() {
  if [[ ${DEMO_BUILD:-1} == 0 ]]; then
    local bin
    for bin in tracegen ingester recomputer checker; do
      [[ -x $BIN/$bin ]] || die "DEMO_BUILD=0 but $BIN/$bin is missing: build it with cargo build --release"
    done
    say "using the binaries in $BIN as they are (DEMO_BUILD=0)"
    return
  fi
  say "building the release binaries (the first build takes a few minutes)"
  (cd "$ROOT" && cargo build --release -p checker -p ingester -p recomputer -p tracegen)
}

# --- ports, processes, probes ----------------------------------------------------------------

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets PORT to the preferred port when free, else the next free one above it, never one picked
# before (not in a subshell: TAKEN must remember the picks).
pick_port() {
  PORT=$1
  while ! port_free "$PORT" || [[ " ${TAKEN[*]-} " == *" $PORT "* ]]; do
    PORT=$((PORT + 1))
    ((PORT < 65535)) || die "no free port above $1"
  done
  TAKEN+=("$PORT")
}

# Starts a process in its own session (so a Ctrl-C in this terminal reaches only this script,
# which then stops it), logging to logs/NAME.log and recording its pid in pids/NAME.pid.
start() {
  local name=$1
  shift
  NO_COLOR=1 setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}

alive() { [[ -f $STATE/pids/$1.pid ]] && kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }

# Waits until CHECK succeeds, failing early (with the log's tail) when process NAME dies.
wait_for() {
  local name=$1 what=$2 timeout=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  # Alive too: another process answering on the port must not pass for this one.
  until "$@" >/dev/null 2>&1 && alive "$name"; do
    if ! alive "$name"; then
      tail -n 20 "$STATE/logs/$name.log" >&2 || true
      die "$name exited before $what (log: $STATE/logs/$name.log)"
    fi
    ((SECONDS < deadline)) || die "$name: no $what after ${timeout}s (log: $STATE/logs/$name.log)"
    nap 0.3
  done
}

redis_ping() {
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
  printf 'PING\r\n' >&3
  local reply
  IFS= read -r -t 2 reply <&3 || reply=''
  exec 3>&-
  [[ $reply == +PONG* ]]
}

# Sleeps in the background and waits for it, so a signal sent to this script alone (not to its
# whole process group, as Ctrl-C does) is handled at once rather than after the sleep.
nap() {
  sleep "$1" &
  wait $! || true
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# Stops every process with a pid file in $STATE/pids: SIGTERM, up to 10 s, then SIGKILL.
stop_all() {
  local pidfile pid name cmdline stopped=()
  shopt -s nullglob
  for pidfile in "$STATE"/pids/*.pid; do
    pid=$(cat "$pidfile")
    name=$(basename "$pidfile" .pid)
    # A pid file can outlive its process and the pid be reused: only stop our own binaries.
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if kill -0 "$pid" 2>/dev/null && [[ $cmdline == redis-server* || $cmdline == */redis-server* || $cmdline == "$BIN"/* ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      stopped+=("$pid:$name")
    fi
    rm -f "$pidfile"
  done
  local deadline=$((SECONDS + 10)) entry
  for entry in "${stopped[@]}"; do
    pid=${entry%%:*}
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      printf '%s did not stop in 10 s; killed\n' "${entry#*:}" >&2
    fi
  done
  STOPPED=${#stopped[@]}
}

# --- the stack -------------------------------------------------------------------------------

write_config() {
  cat >"$STATE/config.yaml" <<EOF
# Generated by scripts/demo.sh; keys as in configs/example.yaml. ANOMALY_* variables override.
redis:
  url: "redis://127.0.0.1:$REDIS_PORT"
timezone: "$TIMEZONE"
weekend_days: ["Sat", "Sun"]
telemetry:
  log_format: "text"
ingester:
  listen: "127.0.0.1:$INGESTER_PORT"   # also OTLP/HTTP: POST /v1/traces
  otlp:
    grpc_listen: "127.0.0.1:$OTLP_GRPC_PORT"
  tempo:
    url: "http://127.0.0.1:$TEMPO_PORT"
    poll_interval: "5s"
    lookback: "120s"
recomputer:
  listen: "127.0.0.1:$RECOMPUTER_PORT"
  interval: "2s"
checker:
  listen: "127.0.0.1:$CHECKER_PORT"
links:
  # Where an anomaly's link leads; in production a Grafana Explore URL for the Tempo data
  # source. Here: the checker's own analysis of the trace, fetched from tracegen's Tempo.
  trace_url: "http://127.0.0.1:$CHECKER_PORT/v1/traces/{traceID}/analysis"
EOF
}

start_stack() {
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/redis"
  TAKEN=()
  pick_port 16379 && REDIS_PORT=$PORT
  pick_port 3200 && TEMPO_PORT=$PORT
  pick_port 8080 && CHECKER_PORT=$PORT
  pick_port 8081 && INGESTER_PORT=$PORT
  pick_port 8082 && RECOMPUTER_PORT=$PORT
  pick_port 4317 && OTLP_GRPC_PORT=$PORT
  CHECKER="http://127.0.0.1:$CHECKER_PORT"
  RECOMPUTER="http://127.0.0.1:$RECOMPUTER_PORT"
  write_config
  cat >"$STATE/env" <<EOF
CHECKER=$CHECKER
INGESTER=http://127.0.0.1:$INGESTER_PORT
OTLP_GRPC=http://127.0.0.1:$OTLP_GRPC_PORT
RECOMPUTER=http://127.0.0.1:$RECOMPUTER_PORT
TEMPO=http://127.0.0.1:$TEMPO_PORT
REDIS=redis://127.0.0.1:$REDIS_PORT
EOF

  say "starting redis-server on 127.0.0.1:$REDIS_PORT (data in $STATE/redis, not persisted)"
  start redis "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" \
    --save '' --appendonly no --daemonize no
  wait_for redis "an answer to PING" 20 redis_ping

  say "starting tracegen as Tempo on 127.0.0.1:$TEMPO_PORT with $HISTORY of history ($TIMEZONE, seed $SEED)"
  start tracegen "$BIN/tracegen" serve-tempo --v3 --listen "127.0.0.1:$TEMPO_PORT" \
    --history "$HISTORY" --seed "$SEED" --timezone "$TIMEZONE"
  wait_for tracegen "Tempo /ready (generating the history)" 180 http_ok "http://127.0.0.1:$TEMPO_PORT/ready"
  printf '    %s%s%s\n' "$DIM" "$(grep -m1 'traces of history' "$STATE/logs/tracegen.log" || true)" "$RESET"

  local svc port
  for svc in recomputer checker ingester; do
    case $svc in
      recomputer) port=$RECOMPUTER_PORT ;;
      checker) port=$CHECKER_PORT ;;
      ingester) port=$INGESTER_PORT ;;
    esac
    say "starting the $svc on 127.0.0.1:$port"
    start "$svc" "$BIN/$svc" --config "$STATE/config.yaml"
    wait_for "$svc" "/readyz" 30 http_ok "http://127.0.0.1:$port/readyz"
  done

  say "backfilling $HISTORY of Tempo history (the poller runs beside it)"
  start backfill "$BIN/ingester" --config "$STATE/config.yaml" backfill --since "$HISTORY"
  local pid line percent eta accepted
  pid=$(cat "$STATE/pids/backfill.pid")
  while kill -0 "$pid" 2>/dev/null; do
    line=$(grep 'backfill progress' "$STATE/logs/backfill.log" | tail -n1 || true)
    percent=$(sed -n 's/.* percent="\{0,1\}\([0-9.]*\).*/\1/p' <<<"$line")
    eta=$(sed -n 's/.* eta=\([^ ]*\).*/\1/p' <<<"$line")
    accepted=$(sed -n 's/.* accepted=\([0-9]*\).*/\1/p' <<<"$line")
    printf '\r    %5s%% of the range, %s traces accepted, ETA %s      ' "${percent:-0}" "${accepted:-0}" "${eta:-?}"
    nap 0.5
  done
  echo
  wait "$pid" 2>/dev/null || true
  rm -f "$STATE/pids/backfill.pid"
  line=$(grep 'backfill done' "$STATE/logs/backfill.log" || true)
  if [[ -z $line ]]; then
    tail -n 20 "$STATE/logs/backfill.log" >&2 || true
    die "the backfill did not finish (log: $STATE/logs/backfill.log)"
  fi
  # Baselines computed during the backfill lack its last windows; the wait below looks for a
  # recompute after this point.
  KEYS_AT_BACKFILL_END=$(metric "$RECOMPUTER" anomaly_recompute_keys_total)
  KEYS_AT_BACKFILL_END=${KEYS_AT_BACKFILL_END:-0}
  printf '    %sbackfill done: %s%s\n' "$DIM" "$(grep -oE '(accepted|duplicates|partial|rejected)(=|: )[0-9]+' <<<"$line" | tr '\n' ' ' || true)" "$RESET"
}

urlencode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9._~-]) out+=$c ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  echo "$out"
}

# The stored baseline of SERVICE|ENDPOINT in the current bucket, or nothing.
baseline_json() {
  local service=${1%%|*} endpoint=${1#*|}
  curl -fsS --max-time 2 "$CHECKER/v1/baseline?service=$(urlencode "$service")&endpoint=$(urlencode "$endpoint")&hour=$HOUR&dayType=$DAY_TYPE" 2>/dev/null || true
}

# A number with at most two decimals, for reading (304.7999999999999 -> 304.8).
round() { [[ -n $1 ]] && awk -v x="$1" 'BEGIN { printf "%.2f", x }' | sed 's/\.\{0,1\}0*$//'; }

# The value of an unlabelled Prometheus metric of a service, or nothing.
metric() { curl -fsS --max-time 2 "$1/metrics" 2>/dev/null | sed -n "s/^$2 \([-0-9.eE+]*\)\$/\1/p" | head -n1 || true; }

json_number() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2" | head -n1; }
json_string() { sed -n "s/.*\"$1\":\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p" <<<"$2" | head -n1; }

wait_for_baselines() {
  read -r HOUR DAY_TYPE < <("$BIN/tracegen" bucket --timezone "$TIMEZONE")
  say "waiting for the baselines of the current bucket ($DAY_TYPE, hour $HOUR in $TIMEZONE)"
  local deadline=$((SECONDS + WAIT_SECS)) ready entry body count keys backlog
  while :; do
    ready=0
    for entry in "${WATCHED[@]}"; do
      body=$(baseline_json "$entry")
      count=$(json_number sampleCount "$body")
      [[ -n $count ]] && ((${count%.*} >= 50)) && ready=$((ready + 1))
    done
    keys=$(metric "$RECOMPUTER" anomaly_recompute_keys_total)
    backlog=$(metric "$RECOMPUTER" anomaly_dirty_backlog)
    printf '\r    baselines ready: %d/%d endpoints; %s baselines written, %s keys waiting   ' \
      "$ready" "${#WATCHED[@]}" "${keys:-?}" "${backlog:-?}"
    # Ready: every watched endpoint has a baseline, and a drain after the backfill emptied the
    # dirty set, so the baselines include the whole history.
    if ((ready == ${#WATCHED[@]})) && [[ ${keys%.*} -gt ${KEYS_AT_BACKFILL_END%.*} && ${backlog%.*} == 0 ]]; then
      break
    fi
    for svc in recomputer checker ingester; do
      alive "$svc" || die "the $svc exited (log: $STATE/logs/$svc.log)"
    done
    ((SECONDS < deadline)) || {
      echo
      die "baselines not ready after ${WAIT_SECS}s; see $STATE/logs/recomputer.log and ingester.log"
    }
    nap 1
  done
  echo
}

# Prints the curl command, runs it, and prints the answer and its explanation.
show_check() {
  local title=$1 body=$2
  local cmd="curl -s -X POST $CHECKER/v1/anomaly/check -H 'content-type: application/json' -d '$body'"
  printf '\n%s%s%s\n%s$ %s%s\n' "$BOLD" "$title" "$RESET" "$DIM" "$cmd" "$RESET"
  local answer
  answer=$(curl -sS --max-time 5 -X POST "$CHECKER/v1/anomaly/check" -H 'content-type: application/json' -d "$body") ||
    die "the checker did not answer"
  if command -v python3 >/dev/null; then
    python3 -m json.tool <<<"$answer" || echo "$answer"
  else
    echo "$answer"
  fi
  local status reason colour=$GREEN
  status=$(json_string status "$answer")
  reason=$(json_string reason "$answer")
  case $status in
    ANOMALY) colour=$RED ;;
    INSUFFICIENT_DATA) colour=$YELLOW ;;
  esac
  printf '%s=> %s%s: %s\n' "$colour" "$status" "$RESET" "$reason"
  VERDICTS+=("$status")
}

print_verdicts() {
  local subject="checkout|POST /api/checkout" base p50 p95 mad normal anomalous now
  now="$(date +%s)000000000"
  # The bucket of the checks' instant: the hour may have turned since the wait.
  read -r HOUR DAY_TYPE < <("$BIN/tracegen" bucket --at "${now%000000000}" --timezone "$TIMEZONE")
  base=$(baseline_json "$subject")
  p50=$(round "$(json_number p50 "$base")")
  p95=$(round "$(json_number p95 "$base")")
  mad=$(round "$(json_number mad "$base")")
  [[ -n $p50 && -n $p95 && -n $mad ]] || die "unexpected baseline answer: $base"
  # A typical duration, and three times the rule's threshold (factor 2, k 10: the defaults).
  normal=$(awk -v x="$p50" 'BEGIN { printf "%d", x + 0.5 }')
  anomalous=$(awk -v p50="$p50" -v p95="$p95" -v mad="$mad" \
    'BEGIN { t = p95 * 2; if (p50 + 10 * mad > t) t = p50 + 10 * mad; printf "%d", 3 * t + 0.5 }')
  VERDICTS=()
  say "four checks against the checker (baseline of checkout POST /api/checkout: p50 ${p50} ms, p95 ${p95} ms, MAD ${mad} ms)"
  show_check "1. A typical checkout (${normal} ms, the bucket's median)" \
    "{\"rootServiceName\":\"checkout\",\"rootTraceName\":\"POST /api/checkout\",\"startTimeUnixNano\":\"$now\",\"durationMs\":$normal}"
  show_check "2. A checkout at three times the threshold (${anomalous} ms)" \
    "{\"rootServiceName\":\"checkout\",\"rootTraceName\":\"POST /api/checkout\",\"startTimeUnixNano\":\"$now\",\"durationMs\":$anomalous}"
  show_check "3. A rare endpoint (a few requests a day: judged against a wider baseline)" \
    "{\"rootServiceName\":\"admin\",\"rootTraceName\":\"GET /api/reports/export\",\"startTimeUnixNano\":\"$now\",\"durationMs\":1500}"
  show_check "4. An endpoint never seen (no samples at any level)" \
    "{\"rootServiceName\":\"admin\",\"rootTraceName\":\"GET /api/never\",\"startTimeUnixNano\":\"$now\",\"durationMs\":1500}"
  if [[ ! "${VERDICTS[*]}" =~ ^NORMAL\ ANOMALY\ (NORMAL|ANOMALY)\ INSUFFICIENT_DATA$ ]]; then
    printf '%swarning:%s expected NORMAL, ANOMALY, a judged rare endpoint, INSUFFICIENT_DATA; got %s\n' "$YELLOW" "$RESET" "${VERDICTS[*]}" >&2
  fi
}

# Sends the history again as OTLP, so every child span feeds its span window. Same seed and
# calendar as tracegen's Tempo: the same traces, so the roots are deduplicated against the
# backfill's and only the child spans are new. Every 200th trace has one slow call three levels
# down (tracegen otlp --slow-every).
send_otlp_history() {
  say "sending the same $HISTORY of traffic as OTLP to the ingester, so span baselines form"
  "$BIN/tracegen" otlp --url "http://127.0.0.1:$INGESTER_PORT" --history "$HISTORY" \
    --seed "$SEED" --timezone "$TIMEZONE" --batch 1000 >"$STATE/logs/tracegen-otlp.log" 2>&1 ||
    {
      tail -n 20 "$STATE/logs/tracegen-otlp.log" >&2 || true
      die "tracegen otlp failed (log: $STATE/logs/tracegen-otlp.log)"
    }
  printf '    %s%s%s\n' "$DIM" "$(grep -m1 'tracegen: total' "$STATE/logs/tracegen-otlp.log" || true)" "$RESET"
}

# The span baseline the analysis example needs: checkout's call three levels down in tracegen's
# trace shape (the `checkout.load` step's `SELECT carts`), in the current bucket.
SLOW_SPAN="SELECT carts"

wait_for_span_baseline() {
  say "waiting for the span baseline of checkout \"$SLOW_SPAN\" in the current bucket"
  local deadline=$((SECONDS + WAIT_SECS)) now body answer count
  while :; do
    now="$(date +%s)000000000"
    body="{\"serviceName\":\"checkout\",\"spanName\":\"$SLOW_SPAN\",\"startTimeUnixNano\":\"$now\",\"durationMs\":10}"
    answer=$(curl -fsS --max-time 2 -X POST "$CHECKER/v1/anomaly/check/span" -H 'content-type: application/json' -d "$body" 2>/dev/null || true)
    count=$(json_number sampleCount "$answer")
    printf '\r    samples in its window: %s   ' "${count:-0}"
    [[ -n $count ]] && ((${count%.*} >= 50)) && break
    ((SECONDS < deadline)) || {
      echo
      die "no span baseline after ${WAIT_SECS}s: $answer (see $STATE/logs/recomputer.log and ingester.log)"
    }
    nap 1
  done
  echo
}

# Example 5: one slow checkout trace, built by tracegen and ending now, analysed by the checker
# without Tempo (POST /v1/traces/analysis): the culprit is the slow span three levels down.
print_analysis() {
  local base p50 duration trace cmd answer summary culprit
  base=$(baseline_json "checkout|POST /api/checkout")
  p50=$(json_number p50 "$base")
  duration=$(awk -v x="${p50:-150}" 'BEGIN { printf "%d", x + 0.5 }')
  trace=$("$BIN/tracegen" slow-trace --service checkout --endpoint "POST /api/checkout" \
    --duration-ms "$duration" --extra-ms 1000) || die "tracegen slow-trace failed"
  printf '%s\n' "$trace" >"$STATE/slow-trace.json"
  cmd="$BIN/tracegen slow-trace --duration-ms $duration --extra-ms 1000 > slow-trace.json
$ curl -s -X POST $CHECKER/v1/traces/analysis -H 'content-type: application/json' -d @slow-trace.json"
  printf '\n%s5. Which span made a slow trace slow (a %d ms checkout with one call a second slower, 10 spans)%s\n%s$ %s%s\n' \
    "$BOLD" "$((duration + 1000))" "$RESET" "$DIM" "$cmd" "$RESET"
  answer=$(curl -sS --max-time 5 -X POST "$CHECKER/v1/traces/analysis" -H 'content-type: application/json' \
    --data-binary "@$STATE/slow-trace.json") || die "the checker did not answer the analysis"
  if command -v python3 >/dev/null; then
    # The verdicts and the culprits; the full answer (every span, the critical path) is long.
    python3 -c '
import json, sys
a = json.load(sys.stdin)
if "culprits" not in a:
    print(json.dumps(a, indent=2)); sys.exit(0)
print(json.dumps({k: a[k] for k in ("traceId", "summary", "durationMs", "spanCount", "culprits")}, indent=2))
print("critical path: " + " -> ".join("%s (%.0f ms)" % (s["name"], s["durationMs"]) for s in a["criticalPath"]))
' <<<"$answer" || echo "$answer"
  else
    echo "$answer"
  fi
  summary=$(json_string summary "$answer")
  # The first culprit's name (serde writes spanId, service, name in that order).
  culprit=$(grep -o '"culprits":\[{"spanId":"[^"]*","service":"[^"]*","name":"[^"]*"' <<<"$answer" |
    sed 's/.*"name":"//; s/"$//' | head -n1 || true)
  if [[ $culprit == "$SLOW_SPAN" ]]; then
    printf '%s=> culprit: %s%s: %s\n' "$RED" "$culprit" "$RESET" "$summary"
  else
    printf '%swarning:%s expected the culprit %s; got %s\n' "$YELLOW" "$RESET" "$SLOW_SPAN" "${culprit:-none}: ${summary:-$answer}" >&2
  fi
}

# Example 6: what the ingester found on its own. One anomalous checkout is pushed now (a fresh
# trace at three times the threshold), judged on ingest, and the feed's three most recent
# anomalies are printed with their explanations and links.
print_feed() {
  local base p50 p95 mad slow id now answer
  base=$(baseline_json "checkout|POST /api/checkout")
  p50=$(json_number p50 "$base")
  p95=$(json_number p95 "$base")
  mad=$(json_number mad "$base")
  slow=$(awk -v p50="${p50:-100}" -v p95="${p95:-200}" -v mad="${mad:-10}" \
    'BEGIN { t = p95 * 2; if (p50 + 10 * mad > t) t = p50 + 10 * mad; printf "%d", 3 * t + 0.5 }')
  now="$(date +%s)000000000"
  id=$(printf 'de%030x' "$(date +%s)")
  curl -fsS --max-time 5 -X POST "http://127.0.0.1:$INGESTER_PORT/v1/traces/ingest" \
    -H 'content-type: application/json' \
    -d "{\"traces\":[{\"traceID\":\"$id\",\"rootServiceName\":\"checkout\",\"rootTraceName\":\"POST /api/checkout\",\"startTimeUnixNano\":\"$now\",\"durationMs\":$slow}]}" \
    >/dev/null || die "the ingester did not take the anomalous trace"
  printf '\n%s6. Anomalies found on ingest, newest first (a %d ms checkout was just pushed; nobody asked about it)%s\n%s$ curl -s "%s/v1/anomalies?limit=3"%s\n' \
    "$BOLD" "$slow" "$RESET" "$DIM" "$CHECKER" "$RESET"
  answer=$(curl -sS --max-time 5 "$CHECKER/v1/anomalies?limit=3") || die "the checker did not answer the feed"
  if command -v python3 >/dev/null; then
    python3 -c '
import json, sys
a = json.load(sys.stdin)
for e in a.get("anomalies", []):
    print("- %s %s %s %s: %s" % (e["time"], e["kind"], e["service"], e["endpoint"], e["reason"]))
    print("  %s" % e.get("traceUrl", "(no link: links.trace_url is not set)"))
if not a.get("anomalies"):
    print(json.dumps(a))
' <<<"$answer" || echo "$answer"
  else
    echo "$answer"
  fi
  printf '    %s(each link opens the trace analysis; the pushed trace was never sent to Tempo, so its link answers 404 TRACE_NOT_FOUND)%s\n' "$DIM" "$RESET"
  if ! grep -q "\"traceId\":\"$id\"" <<<"$answer"; then
    printf '%swarning:%s expected trace %s among the newest anomalies\n' "$YELLOW" "$RESET" "$id" >&2
  fi
}

print_endpoints() {
  cat <<EOF

${BOLD}Running${RESET} (config: $STATE/config.yaml, logs: $STATE/logs/)
  checker     $CHECKER        POST /v1/anomaly/check, /v1/anomaly/check/batch, GET /v1/baseline,
                                         POST /v1/traces/analysis, GET /v1/traces/{id}/analysis,
                                         GET /v1/anomalies (found on ingest)
  ingester    http://127.0.0.1:$INGESTER_PORT        POST /v1/traces/ingest, polling tracegen every 5 s
  recomputer  http://127.0.0.1:$RECOMPUTER_PORT        recomputing dirty baselines every 2 s
  tempo       http://127.0.0.1:$TEMPO_PORT        tracegen: new demo traces every second
  redis       redis://127.0.0.1:$REDIS_PORT
  metrics     curl -s $CHECKER/metrics | grep '^anomaly_'
EOF
}

# --- commands --------------------------------------------------------------------------------

cmd_run() {
  prerequisites
  build
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/latency-anomaly-demo.XXXXXX")
  cleanup() {
    trap - EXIT INT TERM
    echo
    say "stopping everything the demo started"
    stop_all
    if [[ ${DEMO_KEEP:-0} == 1 ]]; then
      echo "    kept $STATE (logs in $STATE/logs)"
    else
      rm -rf "$STATE"
    fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  start_stack
  wait_for_baselines
  print_verdicts
  send_otlp_history
  wait_for_span_baseline
  print_analysis
  print_feed
  print_endpoints
  printf '\nPress Ctrl-C to stop everything.\n'
  # From here on Ctrl-C is the normal way to end the demo, not a failure.
  trap 'exit 0' INT TERM
  # Stop when a service dies.
  while :; do
    for svc in redis tracegen recomputer checker ingester; do
      alive "$svc" || {
        tail -n 20 "$STATE/logs/$svc.log" >&2 || true
        die "the $svc exited unexpectedly (log above)"
      }
    done
    nap 1
  done
}

cmd_up() {
  STATE=$UP_DIR
  mkdir -p "$STATE/pids"
  shopt -s nullglob
  local pidfile
  for pidfile in "$STATE"/pids/*.pid; do
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      die "the demo is already up ($(basename "$pidfile" .pid) is running); run 'just down' first"
    fi
  done
  prerequisites
  build
  rm -rf "$STATE"
  mkdir -p "$STATE"
  # Keep the state directory out of git whatever the repository's .gitignore says.
  echo '*' >"$STATE/.gitignore"
  trap 'echo; say "the demo failed to come up; stopping what started"; stop_all' EXIT
  trap 'exit 130' INT TERM
  start_stack
  wait_for_baselines
  print_verdicts
  send_otlp_history
  wait_for_span_baseline
  print_analysis
  print_feed
  trap - EXIT INT TERM
  print_endpoints
  printf '\nRunning in the background: %sjust logs%s follows the logs, %sjust down%s stops it all.\n' \
    "$BOLD" "$RESET" "$BOLD" "$RESET"
}

cmd_down() {
  STATE=$UP_DIR
  shopt -s nullglob
  local pids=("$STATE"/pids/*.pid)
  if ((${#pids[@]} == 0)); then
    echo "the demo is not up (no pid files in $STATE/pids)"
    return 0
  fi
  stop_all
  rm -rf "$STATE/redis"
  echo "stopped $STOPPED processes (logs kept in $STATE/logs)"
}

cmd_logs() {
  STATE=$UP_DIR
  shopt -s nullglob
  local logs=("$STATE"/logs/*.log)
  ((${#logs[@]})) || die "no logs in $STATE/logs: start the demo with 'just up'"
  exec tail -n 20 -F "${logs[@]}"
}

case "${1:-run}" in
  run) cmd_run ;;
  up) cmd_up ;;
  down) cmd_down ;;
  logs) cmd_logs ;;
  *) die "usage: $0 [run|up|down|logs]" ;;
esac
