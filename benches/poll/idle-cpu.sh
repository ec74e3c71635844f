#!/usr/bin/env bash
# Idle CPU of the director under `poll = "busy"` and `poll = "adaptive"`: starts it on a veth in
# a throwaway namespace with no traffic, reads its CPU time (utime + stime from /proc/PID/stat)
# over SECONDS, and prints the share of one core each mode used. Root; TEST-NET addresses only.
#
#   benches/poll/idle-cpu.sh [SECONDS]      (default 5)
set -euo pipefail
seconds=${1:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
director=${CARGO_TARGET_DIR:-$root/target}/release/director
[[ -x $director ]] || (cd "$root" && cargo build --release -q)
ns="idlecpu$$"
dir=$(mktemp -d)
cleanup() {
    [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add eth0 type veth peer name peer0
ip -n "$ns" addr add 192.0.2.3/24 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set peer0 up
ticks=$(getconf CLK_TCK)
for mode in busy adaptive; do
    cat > "$dir/$mode.toml" <<CONF
[director]
interfaces = ["eth0"]
workers = 1
poll = "$mode"
stats_socket = "$dir/$mode.sock"
[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
protocol = "tcp"
scheduler = "maglev"
forwarding = "dr"
[[service.backend]]
address = "192.0.2.11"
mac = "02:00:00:00:00:11"
CONF
    ip netns exec "$ns" "$director" run --config "$dir/$mode.toml" >"$dir/$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [[ -S $dir/$mode.sock ]] && break; sleep 0.05; done
    [[ -S $dir/$mode.sock ]] || { cat "$dir/$mode.log"; exit 1; }
    cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
    before=$(cpu)
    sleep "$seconds"
    after=$(cpu)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    awk -v d=$((after - before)) -v t="$ticks" -v s="$seconds" -v m="$mode" \
        'BEGIN { printf "%-9s idle CPU: %5.1f%% of one core over %ss\n", m, 100 * d / t / s, s }'
done
