# Developer and CI entry points. CI (.ci/run) calls these same recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The doc tests, then every other test: cargo-nextest when installed, else cargo test (installs redis-server and redis-sentinel with apt-get if missing; the tests start their own); then the store's and services' tests again on a Redis Cluster and on Sentinel.
test *args:
    @bash scripts/test.sh {{args}}

# Formatting check and clippy with warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings

# Supply chain: licenses, banned or duplicate crates, sources (advisories need GitHub access).
deny:
    cargo deny check licenses bans sources

# Format the code.
fmt:
    cargo fmt --all

# Helm chart and deploy/ without a cluster: lint, render, validate, run the binaries on the rendered config, promtool (tools cached in target/tools/).
chart-check:
    bash scripts/chart-check.sh

# Benchmarks: rewrites the figures section of BENCHMARKS.md.
# Needs wrk and redis-benchmark (apt-get install wrk redis-server); about 8 minutes (push ingest with detection on against off included; then ingest, a recompute drain and cache-off lookups against a standalone Redis and a 3-primary Redis Cluster in one run, printed, not written).
bench:
    @command -v wrk >/dev/null || { echo "bench needs wrk: sudo apt-get install wrk" >&2; exit 1; }
    cargo build --release -p anomaly-bench -p checker -p ingester
    cargo bench -p anomaly-core --bench core -- --noplot
    ./target/release/anomaly-bench --write BENCHMARKS.md all
    ./target/release/anomaly-bench modes

# Fault tests: the three services together under a Redis SIGKILL, bad input and hostile names (system-tests), plus each service's kill and outage tests. All of them also run in `just test`.
chaos:
    cargo nextest run -p system-tests --no-fail-fast
    cargo nextest run -p checker -p ingester -p recomputer --no-fail-fast -E 'test(/sigkill|secrets|outage|redis_down|dead/)'

# Soak: a steady load through the three release binaries for `minutes` (default 10), sampled every 5 s; fails on any error, a p99 over its bound or memory growth of 10% after warm-up. Not in CI.
soak minutes="10":
    cargo build --release -p anomaly-bench -p checker -p ingester -p recomputer
    ./target/release/anomaly-bench soak --minutes {{minutes}}

# Detection quality: 3 weeks of seeded, labelled traffic through the release ingester and recomputer, then a week of checks through two release checkers (fallback chain, exact only) beside one global window per endpoint, then the contamination guard (stats.exclude_anomalies) off and on through a one-hour 3x and 5x incident; rewrites the quality section of BENCHMARKS.md. Under a minute.
quality seed="1":
    cargo build --release -p anomaly-bench -p checker -p ingester -p recomputer
    ./target/release/anomaly-bench --write BENCHMARKS.md quality --seed {{seed}}

# Build the release binaries.
build:
    cargo build --release --locked -p checker -p ingester -p recomputer

# Local demo: Redis, tracegen as Tempo with a week of history, the three services, four verdicts, then the history again as OTLP, one trace analysis naming its slow span, and the three newest anomalies found on ingest with their links; Ctrl-C stops it.
demo:
    @bash scripts/demo.sh run

# The demo stack in the background (state and logs in .demo/); `just down` stops it.
up:
    @bash scripts/demo.sh up

# Stop what `just up` started.
down:
    @bash scripts/demo.sh down

# Follow the logs of what `just up` started.
logs:
    @bash scripts/demo.sh logs
