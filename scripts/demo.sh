#!/usr/bin/env bash
# The demo: builds a lab of network namespaces (client, director, three real servers on a
# bridge), starts the director on configs/demo.toml, sends 300 HTTP requests to the VIP,
# prints how they spread over the real servers and the director's counters, and tears down.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "demo: run as root: it creates network namespaces and attaches an XDP program" >&2
    exit 1
fi
scripts/setup.sh
cargo build --release --workspace --bins
exec target/release/demo "$@"
