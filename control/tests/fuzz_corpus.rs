//! Replays the committed corpora of the control side's fuzz targets (`fuzz/corpus/<target>/`:
//! seeds, inputs the fuzzer found interesting, and `regression-*` inputs of fixed findings)
//! through the harnesses the cargo-fuzz targets call, so the stable test suite checks every
//! input without nightly. `scripts/fuzz.sh` grows the corpora; the seeds come from
//! `control::fuzzing::seeds` and `configs/` (written by the ignored test below).

use std::fs;
use std::path::{Path, PathBuf};

use control::fuzzing;

/// A harness: takes any bytes, panics when an invariant breaks.
type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("vrrp_parser", fuzzing::vrrp_parser),
    ("sync_parser", fuzzing::sync_parser),
    ("control_request", fuzzing::control_request),
    ("config_parser", fuzzing::config_parser),
    ("health_response", fuzzing::health_response),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Names the input being replayed if it panics.
struct Replaying<'a>(&'a str, &'a Path);

impl Drop for Replaying<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("while replaying {} input {}", self.0, self.1.display());
        }
    }
}

/// Seeds by target: the harnesses' own, and for the configuration parser every file under
/// `configs/`.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    if target != "config_parser" {
        return fuzzing::seeds(target);
    }
    let mut seeds: Vec<(String, Vec<u8>)> = fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (format!("seed-{name}"), fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_corpus_replays() {
    for (target, harness) in TARGETS {
        let dir = repo().join("fuzz/corpus").join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "{} is empty: run the ignored write_seeds test",
            dir.display()
        );
        for file in &files {
            let _replaying = Replaying(target, file);
            harness(&fs::read(file).unwrap());
        }
    }
}

#[test]
fn seeds_pass() {
    for (target, harness) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (name, input) in seeds {
            let _replaying = Replaying(target, Path::new(&name));
            harness(&input);
        }
    }
}

/// Writes the seeds into the corpora: `cargo test --release -p control --test fuzz_corpus --
/// --ignored write_seeds`.
#[test]
#[ignore = "writes fuzz/corpus/<target>/seed-*; run by hand when the seeds change"]
fn write_seeds() {
    for (target, _) in TARGETS {
        let dir = repo().join("fuzz/corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, input) in seeds(target) {
            fs::write(dir.join(name), input).unwrap();
        }
    }
}
