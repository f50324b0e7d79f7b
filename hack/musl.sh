#!/usr/bin/env bash
# Makes sure the release binary can be linked statically against musl: the Rust target, and
# musl's C compiler for the crates with C parts (ring, jemalloc). Once per machine.
#   hack/musl.sh x86_64-unknown-linux-musl
set -euo pipefail
target=$1
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing musl-tools (musl-gcc)"
    apt-get install -y -qq musl-tools >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
  else
    echo "musl-gcc is missing: install musl-tools (Debian, Ubuntu) or musl-gcc (Fedora)" >&2
    exit 1
  fi
fi
