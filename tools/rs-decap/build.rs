//! Compiles the decapsulation XDP program and generates its libbpf-rs skeleton into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "bpf/rs_decap.bpf.c";

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("rs_decap.skel.rs");
    // Debian keeps asm/ under the multiarch directory, which clang's BPF target does not search.
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    SkeletonBuilder::new()
        .source(SOURCE)
        .clang_args(["-O2", "-g", "-Wall", "-Werror", arch_include.as_str()])
        .build_and_generate(&out)
        .unwrap_or_else(|error| panic!("building {SOURCE}: {error:#}"));
    println!("cargo:rerun-if-changed={SOURCE}");
}
