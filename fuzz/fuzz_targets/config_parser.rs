//! Configuration text through the parse and validation `director check` runs:
//! the harness and its input format are `control::fuzzing::config_parser`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::config_parser(data);
});
