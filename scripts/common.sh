#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/test.sh: messages, and installing Debian packages that
# are missing (through sudo when not root; elsewhere it stops and says what to install).

if [[ -t 1 ]]; then
  BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' YELLOW=$'\e[33m' RESET=$'\e[0m'
else
  BOLD='' DIM='' GREEN='' RED='' YELLOW='' RESET=''
fi

say() { printf '%s==>%s %s\n' "$BOLD" "$RESET" "$*"; }
die() {
  printf '%serror:%s %s\n' "$RED" "$RESET" "$*" >&2
  exit 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    return 1
  fi
}

# Installs Debian packages, or says how to when this is not possible.
apt_install() {
  local packages=("$@")
  if ! command -v apt-get >/dev/null; then
    die "missing ${packages[*]}: install it with your package manager (Debian/Ubuntu: sudo apt-get install ${packages[*]}; macOS: brew install ${packages[*]/redis-server/redis}) and run this again"
  fi
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    die "missing ${packages[*]} and no sudo: as root, run apt-get update && apt-get install ${packages[*]}"
  fi
  say "installing ${packages[*]} with apt-get (may ask for your sudo password)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}")
  # A fresh machine often has no package lists yet: update once and retry.
  if ! as_root "${install[@]}"; then
    if ! as_root apt-get update -q || ! as_root "${install[@]}"; then
      die "could not install ${packages[*]}; run: sudo apt-get update && sudo apt-get install ${packages[*]}"
    fi
  fi
}

# Whether redis-server can be run (Debian puts it in /usr/bin; some installs only in /usr/sbin).
have_redis_server() { command -v redis-server >/dev/null || [[ -x /usr/sbin/redis-server ]]; }
