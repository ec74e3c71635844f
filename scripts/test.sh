#!/usr/bin/env bash
# The test command: installs what is missing, builds the release binaries the end-to-end tests
# drive, and runs every test (unit, property, AF_XDP and namespace end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "test: run as root: the end-to-end tests create network namespaces and attach XDP programs" >&2
    exit 1
fi
scripts/setup.sh
cargo fmt --all --check
cargo build --release --workspace --bins
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace "$@"
