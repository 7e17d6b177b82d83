#!/usr/bin/env bash
# Unpacks promtool and prometheus from Debian's prometheus package into target/tools/bin/ (apt-get
# download, not installed), unless they are there already. The anomaly-runtime tests scrape
# /metrics with a real Prometheus (exemplars in OpenMetrics) and parse the classic text format
# with promtool; `just test` runs this first. Prints the folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/tools/bin"
if "$BIN/promtool" --version >/dev/null 2>&1 && "$BIN/prometheus" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
command -v apt-get >/dev/null || { echo "prometheus-tools: apt-get is needed to fetch Debian's prometheus package" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
(cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p "$BIN"
install -m 755 "$tmp/x/usr/bin/promtool" "$tmp/x/usr/bin/prometheus" "$BIN/"
echo "$BIN"
