//! A real server's answer through the `http` and `send_expect` checks' judging:
//! the harness and its input format are `control::fuzzing::health_response`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::health_response(data);
});
