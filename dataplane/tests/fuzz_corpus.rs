//! Replays the committed corpus of the data plane's fuzz target (`fuzz/corpus/frame_pipeline/`,
//! seeds, inputs the fuzzer found interesting and `regression-*` inputs of fixed findings)
//! through the harness the cargo-fuzz target calls, so the stable test suite checks every input
//! without nightly. `scripts/fuzz.sh` grows the corpus; the seeds come from
//! `dataplane::testing::fuzzing::frame_pipeline_seeds` (written by the ignored test below).

use std::fs;
use std::path::{Path, PathBuf};

use dataplane::testing::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Names the input being replayed if it panics.
struct Replaying<'a>(&'a Path);

impl Drop for Replaying<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("while replaying {}", self.0.display());
        }
    }
}

#[test]
fn frame_pipeline_corpus_replays() {
    let dir = corpus_dir("frame_pipeline");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.iter().any(|file| file
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("seed-"))),
        "{} holds no seed: run the ignored write_frame_pipeline_seeds test",
        dir.display()
    );
    for file in &files {
        let _replaying = Replaying(file);
        fuzzing::frame_pipeline(&fs::read(file).unwrap());
    }
}

#[test]
fn frame_pipeline_seeds_pass() {
    for (name, input) in fuzzing::frame_pipeline_seeds() {
        let _replaying = Replaying(Path::new(&name));
        fuzzing::frame_pipeline(&input);
    }
}

/// Writes the seeds into the corpus: `cargo test --release -p dataplane --test fuzz_corpus --
/// --ignored write_frame_pipeline_seeds`.
#[test]
#[ignore = "writes fuzz/corpus/frame_pipeline/seed-*; run by hand when the seeds change"]
fn write_frame_pipeline_seeds() {
    let dir = corpus_dir("frame_pipeline");
    fs::create_dir_all(&dir).unwrap();
    for (name, input) in fuzzing::frame_pipeline_seeds() {
        fs::write(dir.join(name), input).unwrap();
    }
}
