//! A VRRP datagram (IPv4) or message (IPv6) through the parsers of `control/src/ha/vrrp/`:
//! the harness and its input format are `control::fuzzing::vrrp_parser`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::fuzzing::vrrp_parser(data);
});
