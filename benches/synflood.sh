#!/usr/bin/env bash
# The SYN flood benchmark (issue 16): in the namespace lab, spoofed SYNs from random
# 198.51.100.0/24 (TEST-NET-2) sources and ports flood the director's connection table (smaller
# than the flood) while a real client runs HTTP requests under rr; reports the requests'
# success rate, the established flows lost (keep-alive connections opened before the flood) and
# the director's RSS before and after. See ../README.md ("SYN floods") and README.md here.
#
#   benches/synflood.sh                      # 300000 SYNs into a 4096-entry table
#   SYNFLOOD_SYNS=1000000 SYNFLOOD_TABLE=65536 SYNFLOOD_ESTABLISHED=50 benches/synflood.sh
#
# Needs root (network namespaces) and release binaries (cargo build --release --workspace
# --bins). The generator is a raw AF_PACKET socket in the client's namespace, a bounded count,
# nothing leaves the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec cargo test --release -p director-lab --test overload synflood_bench -- --ignored \
    --nocapture --test-threads 1
