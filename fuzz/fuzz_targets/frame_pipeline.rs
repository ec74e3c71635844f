//! Any input through the data plane's pipeline against a table with every forwarding mode:
//! the harness and its input format are `dataplane::testing::fuzzing::frame_pipeline`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::testing::fuzzing::frame_pipeline(data);
});
