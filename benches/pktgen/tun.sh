#!/usr/bin/env bash
# The director in TUN mode against the baselines, in one run. See run.py and ../README.md.
exec python3 "$(dirname "$0")/run.py" --mode tun "$@"
