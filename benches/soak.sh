#!/usr/bin/env bash
# The soak benchmark (issue 16): two directors in one VRRP group ([ha], state sync) in the
# namespace lab for MINUTES (default 2) under continuous HTTP requests, cycling through a real
# server's health check flapping (its HTTP server stopped, then started), reloads of both
# directors (new weights) and failovers (the master's link down, the backup takes over, the
# link back, the master preempts); reports requests ok and failed by what was going on,
# failovers and reloads done, each director's RSS before and after and UMEM frames leaked. See
# README.md here.
#
#   benches/soak.sh          # 2 minutes
#   benches/soak.sh 30       # 30 minutes
#
# Needs root (network namespaces) and release binaries (built here). Nothing leaves the lab's
# namespaces (TEST-NET-1 addresses, VRRP's 224.0.0.18 on the lab's own segment).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-2}"
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
cargo build --release --workspace --bins
SOAK_MINUTES="$minutes" exec cargo test --release -p director-lab --test storm soak_bench -- \
    --ignored --nocapture --test-threads 1
