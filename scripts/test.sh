#!/usr/bin/env bash
# `just test`: the doc tests, then every other test of the workspace (last, so the run closes on
# the runner's summary).
#
# The tests start their own redis-server (or use REDIS_URL): when it is missing it is installed
# with apt-get, as `just demo` does; so are promtool and prometheus, unpacked into
# target/tools/bin from Debian's package by scripts/prometheus-tools.sh. The runner is
# cargo-nextest when it is installed (as in CI: each test in its own process, in parallel), else
# plain `cargo test`, which runs the same tests.
# TEST_RUNNER=cargo forces `cargo test`; extra arguments go to the runner.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"
cd "$ROOT"

command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
if [[ -z ${REDIS_URL:-} ]] && ! have_redis_server; then
  apt_install redis-server
fi
# The Redis Cluster and Sentinel runs below need redis-cli (redis-tools) and redis-sentinel.
if ! command -v redis-sentinel >/dev/null && [[ ! -x /usr/bin/redis-sentinel ]]; then
  apt_install redis-sentinel
fi
# The anomaly-runtime tests scrape /metrics with a real Prometheus and parse it with promtool.
bash "$ROOT/scripts/prometheus-tools.sh" >/dev/null

cargo test --workspace --doc --quiet
# The store's and the three services' tests again on a real Redis Cluster (3 primaries, 3
# replicas) and on a Sentinel deployment (primary, replica, three sentinels), which anomaly-testkit
# starts when TEST_REDIS_MODE says so: every test that uses the shared Redis runs in that mode;
# tests that start a server of their own (outages, TLS, SIGKILL of Redis) stay standalone, and
# anomaly-store's failover tests start their own cluster and sentinels in every run.
MODE_CRATES=(-p anomaly-store -p ingester -p recomputer -p checker)
if [[ ${TEST_RUNNER:-} != cargo ]] && cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
  for mode in cluster sentinel; do
    say "the store's and the services' tests with TEST_REDIS_MODE=$mode"
    TEST_REDIS_MODE=$mode cargo nextest run "${MODE_CRATES[@]}" --all-targets --no-fail-fast "$@"
  done
else
  if [[ ${TEST_RUNNER:-} != cargo ]]; then
    say "cargo-nextest is not installed: running the tests with cargo test (cargo install cargo-nextest --locked gives the runner CI uses)"
  fi
  cargo test --workspace --all-targets --no-fail-fast "$@"
  for mode in cluster sentinel; do
    say "the store's and the services' tests with TEST_REDIS_MODE=$mode"
    TEST_REDIS_MODE=$mode cargo test "${MODE_CRATES[@]}" --all-targets --no-fail-fast "$@"
  done
fi
