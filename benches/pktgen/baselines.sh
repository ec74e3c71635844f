#!/usr/bin/env bash
# The three baselines alone (testpmd macswap, XDP_TX hairpin, bare AF_XDP macswap) on one veth. See run.py and ../README.md.
exec python3 "$(dirname "$0")/run.py" --mode baselines "$@"
