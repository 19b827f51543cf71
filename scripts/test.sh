#!/usr/bin/env bash
# The whole check, from a fresh machine: installs what the tests need if it is absent, then
# formatting, clippy (-D warnings), the declared rust-version against the dependencies, each
# feature built alone (cargo hack), all tests with all features and with none, doc tests,
# rustdoc (-D warnings), the quickstart, and a short fuzz smoke run.
#
#   scripts/test.sh            # everything
#   FUZZ_SECONDS=600 scripts/test.sh   # longer fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
step() { printf '\n==> %s\n' "$*"; }

# --- install what is missing -------------------------------------------------------------
apt_updated=0
need_pkg() { # need_pkg <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return 0
  step "installing $2 (for $1)"
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "error: $1 is missing; install the Debian package $2" >&2; exit 1
  fi
  local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}
need_pkg cc gcc
need_pkg c++ g++   # libfuzzer-sys compiles libFuzzer's C++ sources
need_pkg make make
need_pkg redis-server redis-server   # tests/redis.rs starts real servers (and a cluster)
need_pkg redis-cli redis-tools
need_pkg python3 python3   # scripts/check_rust_version.py
# tests/postgres.rs starts real PostgreSQL servers (initdb + pg_ctl, run as the package's
# `postgres` user); Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need_pkg /nonexistent/initdb postgresql
fi
command -v cargo >/dev/null || { echo "error: cargo is missing; install Rust (rustup)" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
if ! cargo hack --version >/dev/null 2>&1; then
  step "installing cargo-hack"
  cargo install cargo-hack --locked --quiet
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

# --- checks ------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt --all -- --check)

step "cargo clippy --all-targets --all-features -D warnings"
cargo clippy --all-targets --all-features -- -D warnings

step "rust-version covers every dependency"
python3 scripts/check_rust_version.py

step "cargo hack clippy --each-feature --no-dev-deps -D warnings (every feature alone, and none)"
cargo hack clippy --each-feature --no-dev-deps --quiet -- -D warnings

step "cargo test --all-features (unit, integration, property, doc tests)"
cargo test --all-features

step "cargo test --no-default-features"
cargo test --no-default-features

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --quiet

step "quickstart example"
cargo run --quiet --example quickstart -- "$(mktemp -d)/decisions.jsonl"

step "fuzz smoke run (${FUZZ_SECONDS}s per target, stable toolchain, no sanitizer)"
for target in $(cd fuzz && cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  log="$(mktemp)"
  if ! cargo fuzz run "$target" --sanitizer none "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "error: fuzz target $target failed; reproduce with:" \
      "cargo fuzz run $target --sanitizer none fuzz/artifacts/$target/<crash file>" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units)" "$log"
done

printf '\nall checks passed\n'
