#!/usr/bin/env bash
# Installs what building and testing director needs, skipping what is already there.
# Safe to run repeatedly; needs root (apt-get) on a bare Debian machine.
set -euo pipefail

need_packages=()
want() { # want PACKAGE [FILE-THAT-PROVES-IT]
    local package=$1 proof=${2:-}
    if [[ -n $proof && -e $proof ]]; then return; fi
    if [[ -z $proof ]] && dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        return
    fi
    need_packages+=("$package")
}

want clang /usr/bin/clang
want llvm /usr/bin/llvm-strip
want libelf-dev /usr/include/libelf.h
want zlib1g-dev /usr/include/zlib.h
want libbpf-dev /usr/include/bpf/bpf_helpers.h
want linux-libc-dev /usr/include/linux/bpf.h
want pkg-config /usr/bin/pkg-config
want m4 /usr/bin/m4
want make /usr/bin/make
want iproute2 /usr/sbin/ip
want ethtool /usr/sbin/ethtool
want python3 /usr/bin/python3
want curl /usr/bin/curl
want tcpdump /usr/bin/tcpdump
want procps /usr/bin/pkill
want keepalived /usr/sbin/keepalived   # the VRRP interop tests' peer

if ((${#need_packages[@]})); then
    echo "setup: installing ${need_packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi
