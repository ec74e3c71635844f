//! Bytes on the stats/control socket through its request parser:
//! the harness and its input format are `control::fuzzing::control_request`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::control_request(data);
});
