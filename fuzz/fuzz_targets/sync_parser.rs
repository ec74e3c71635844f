//! A state-sync datagram through the receiver's decoder:
//! the harness and its input format are `control::fuzzing::sync_parser`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::sync_parser(data);
});
