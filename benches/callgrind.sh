#!/usr/bin/env bash
# Instructions per frame through the per-packet pipeline, counted by valgrind's callgrind: exact
# and repeatable on this noisy shared VM, where hardware perf counters are unavailable.
#
#   benches/callgrind.sh [CASE...]      (default: every case of examples/pipeline_ir.rs)
#
# For each case, `pipeline_ir CASE K` runs under `valgrind --tool=callgrind` at K = K1 and
# K = K2; (Ir(K2) - Ir(K1)) / (K2 - K1) is the cost of one frame with set-up, warm-up and exit
# cancelled out. Every case includes the copy of the template frame into the chunk, as the
# criterion bench does; the `copy` case measures that copy alone, and `net` subtracts it.
# Installs valgrind with apt when missing. Builds with `cargo build --release` (respecting
# CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

K1=${K1:-10000}
K2=${K2:-30000}
CASES=("$@")
if ((${#CASES[@]} == 0)); then
    CASES=(copy dr-established dr-new-flow nat-established nat-reply tun-established drop-fragment
        nat-established-fib nat-reply-fib nat-reply-route tun-established-fib dr6-established
        nat6-established nat6-reply tun6-established)
fi

if ! command -v valgrind >/dev/null; then
    echo "callgrind: installing valgrind" >&2
    if [[ $(id -u) != 0 ]]; then
        echo "callgrind: valgrind is missing; run as root to install it, or apt-get install valgrind" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

cargo build --release -q -p director-benches --example pipeline_ir
bin="${CARGO_TARGET_DIR:-target}/release/examples/pipeline_ir"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Total instructions (Ir) of one run.
instructions() { # CASE K
    local out="$scratch/callgrind.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>"$out.log" || {
        cat "$out.log" >&2
        return 1
    }
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

printf '%-18s %12s %12s\n' case "Ir/frame" "net Ir/frame"
copy_cost=""
for case in "${CASES[@]}"; do
    low=$(instructions "$case" "$K1")
    high=$(instructions "$case" "$K2")
    per_frame=$(awk -v a="$low" -v b="$high" -v k1="$K1" -v k2="$K2" 'BEGIN { printf "%.1f", (b - a) / (k2 - k1) }')
    if [[ $case == copy ]]; then
        copy_cost=$per_frame
        printf '%-18s %12s %12s\n' "$case" "$per_frame" "-"
    elif [[ -n $copy_cost ]]; then
        net=$(awk -v a="$per_frame" -v c="$copy_cost" 'BEGIN { printf "%.1f", a - c }')
        printf '%-18s %12s %12s\n' "$case" "$per_frame" "$net"
    else
        printf '%-18s %12s %12s\n' "$case" "$per_frame" "-"
    fi
done
echo "Ir/frame: instructions per frame, template copy included; net: minus the copy case ($K1 and $K2 frames, valgrind $(valgrind --version | sed 's/valgrind-//'))"
