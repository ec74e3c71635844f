#!/usr/bin/env bash
# Coverage-guided fuzzing of the director with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]
#
# Runs TARGET (default: every target) for SECONDS each (default 60), one process at a time
# (the machines are shared), starting from the committed corpus in fuzz/corpus/TARGET/. New
# inputs that add coverage are merged back into that corpus, which is minimised on the way
# (seed-* and regression-* inputs always kept), so it stays small. Prints the executions per
# target and in total. A crash or a hang leaves its input in fuzz/artifacts/TARGET/ and makes
# the script exit non-zero once every target has run: fix it, then copy the input into the
# corpus as regression-<what> so the stable replay tests (dataplane/tests/fuzz_corpus.rs,
# control/tests/fuzz_corpus.rs) keep checking it.
#
# Needs the nightly toolchain and cargo-fuzz; installs cargo-fuzz when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
all=(frame_pipeline vrrp_parser sync_parser control_request config_parser health_response)
target=${1:-all}
seconds=${2:-60}

if [[ "$target" == all ]]; then
    targets=("${all[@]}")
elif [[ " ${all[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "unknown target '$target': expected one of: all ${all[*]}" >&2
    exit 2
fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# No sanitizer: the targets run safe Rust (the pipeline's only unsafe code is a prefetch hint),
# where AddressSanitizer finds nothing and halves the executions. Debug assertions on, so
# integer overflow panics.
build_flags=(--sanitizer none --debug-assertions --release)
# One process (no -jobs/-workers: libFuzzer's default is a single worker), bounded memory and a
# 10 s limit per input, so a hang is reported as one.
libfuzzer_flags=(-rss_limit_mb=2048 -timeout=10)

cd "$root/fuzz"
if [[ "$target" == all ]]; then
    cargo +nightly fuzz build "${build_flags[@]}"
else
    cargo +nightly fuzz build "${build_flags[@]}" "$target"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
total=0
failed=()
summary=()
for name in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$name"
    found="$work/$name-found"
    minimal="$work/$name-minimal"
    mkdir -p "$corpus" "$found" "$minimal"
    echo "== $name: ${seconds}s from $(find "$corpus" -type f | wc -l) corpus inputs"
    log="$work/$name.log"
    status=0
    # New inputs go to the first directory; the committed corpus is read.
    cargo +nightly fuzz run "${build_flags[@]}" "$name" "$found" "$corpus" -- \
        "${libfuzzer_flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    executions=${executions:-0}
    total=$((total + executions))
    if [[ $status -ne 0 ]]; then
        failed+=("$name")
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|timeout' "$log" | head -n 20 >&2 || true
    fi
    # Keep the seeds and regressions, then add whatever of the old corpus and the new inputs
    # adds coverage (libFuzzer's merge: a minimised union). Edges only (-use_counters=0), not
    # hit counts, so the committed corpus stays at a few hundred inputs per target.
    find "$corpus" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'regression-*' \) \
        -exec cp {} "$minimal/" \;
    if cargo +nightly fuzz run "${build_flags[@]}" "$name" "$minimal" "$corpus" "$found" -- \
        "${libfuzzer_flags[@]}" -merge=1 -use_counters=0 >"$work/$name-merge.log" 2>&1; then
        find "$corpus" -maxdepth 1 -type f -delete
        cp "$minimal"/* "$corpus/"
    else
        echo "$name: merging the corpus failed; it is left as it was" >&2
    fi
    kept=$(find "$corpus" -type f | wc -l)
    if [[ $kept -gt 400 ]]; then
        echo "$name: the corpus holds $kept inputs (more than 400); consider fewer seeds" >&2
    fi
    line=$(printf '%-16s %14s executions, corpus %4s inputs%s' "$name" "$executions" "$kept" \
        "$([[ $status -ne 0 ]] && echo ', FAILED (see fuzz/artifacts/'"$name"')')")
    summary+=("$line")
    echo "$line"
done

echo
echo "== $(date -u +%Y-%m-%dT%H:%MZ), ${seconds}s per target"
printf '%s\n' "${summary[@]}"
printf '%-16s %14s executions\n' total "$total"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
