//! Compiles pktgen's XDP programs (generator, sink, hairpin) and generates their libbpf-rs
//! skeletons into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: [&str; 3] = ["send", "sink", "hairpin"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Debian keeps asm/ under the multiarch directory, which clang's BPF target does not search.
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    for program in PROGRAMS {
        let source = format!("bpf/{program}.bpf.c");
        SkeletonBuilder::new()
            .source(&source)
            .clang_args(["-O2", "-g", "-Wall", "-Werror", arch_include.as_str()])
            .build_and_generate(out_dir.join(format!("{program}.skel.rs")))
            .unwrap_or_else(|error| panic!("building {source}: {error:#}"));
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-changed=bpf/pktgen.h");
}
