#!/usr/bin/env bash
# The reload storm benchmark (issue 16): in the namespace lab, 100 reloads in 20 s alternating
# schedulers, weights, a second service (added, removed) and an invalid file (refused, the
# running config kept), under continuous HTTP requests from the client; reports failed
# requests (goal 0), the director's RSS growth (goal < 10%) and UMEM frames leaked (goal 0:
# the workers' frames_* gauges at idle, before and after). See README.md here.
#
#   benches/reload_storm.sh                              # 100 reloads in 20 s
#   STORM_RELOADS=300 STORM_SECONDS=60 benches/reload_storm.sh
#
# Needs root (network namespaces) and release binaries (built here). Nothing leaves the lab's
# namespaces (TEST-NET-1 addresses only).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec cargo test --release -p director-lab --test storm reload_storm_bench -- --ignored \
    --nocapture --test-threads 1
