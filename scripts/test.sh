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
# The anomaly-runtime tests scrape /metrics with a real Prometheus and parse it with promtool.
bash "$ROOT/scripts/prometheus-tools.sh" >/dev/null

cargo test --workspace --doc --quiet
if [[ ${TEST_RUNNER:-} != cargo ]] && cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  if [[ ${TEST_RUNNER:-} != cargo ]]; then
    say "cargo-nextest is not installed: running the tests with cargo test (cargo install cargo-nextest --locked gives the runner CI uses)"
  fi
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi
