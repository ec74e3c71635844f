//! End-to-end: a configuration the machine's memory cannot hold is refused, naming
//! `max_connections` and the figures, by `director check` and by start-up (in a memory cgroup
//! with a small limit), instead of the OOM killer ending the director. Map capacities on reload
//! are in `reload.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use director_lab::{director_bin, require_root, run_with_timeout, Host, Lab, LabOptions};

/// `director ARGS...` in the director's namespace, bounded.
fn director(lab: &Lab, args: &[&str]) -> std::process::Output {
    let bin = director_bin();
    let mut command = vec![bin.to_str().expect("a UTF-8 path")];
    command.extend_from_slice(args);
    lab.exec(Host::Director, &command)
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

#[test]
fn director_check_refuses_max_connections_past_the_memory() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    let mut config = lab.dr_config("rr");
    // 64 workers of 2^28 entries: terabytes.
    config.workers = 64;
    let text = config.to_toml().replacen(
        "[director]\n",
        "[director]\nmax_connections = 268435456\n",
        1,
    );
    let path = lab.write_config_text(&text);
    let out = director(&lab, &["check", "--config", &path.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "director check accepted it: {stderr}"
    );
    assert_mentions(
        &stderr,
        &[
            "director.max_connections = 268435456",
            "connection tables",
            "64 worker(s) x 268435456 entries",
            "available",
        ],
    );
}

/// A memory cgroup of this test's own, removed on drop (v2 where the unified hierarchy has the
/// memory controller, else v1's).
struct MemoryCgroup {
    path: PathBuf,
}

impl MemoryCgroup {
    fn new(limit: u64) -> Self {
        let name = format!("director-lab-limits-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (path, limit_file) = if fs::read_to_string(v2).is_ok_and(|c| c.contains("memory")) {
            (Path::new("/sys/fs/cgroup").join(name), "memory.max")
        } else {
            (
                Path::new("/sys/fs/cgroup/memory").join(name),
                "memory.limit_in_bytes",
            )
        };
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let cgroup = MemoryCgroup { path };
        fs::write(cgroup.path.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("limiting {}: {e}", cgroup.path.display()));
        cgroup
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.path);
    }
}

#[test]
fn start_up_refuses_max_connections_past_its_cgroup_limit() {
    require_root!();
    let lab = Lab::dr(LabOptions::servers(1));
    // One worker of 2^22 entries: several hundred MiB, well past the cgroup's 128 MiB and well
    // within the machine's memory, so only the cgroup's limit can refuse it.
    let text = lab.dr_config("rr").to_toml().replacen(
        "[director]\n",
        "[director]\nmax_connections = 4194304\n",
        1,
    );
    let path = lab.write_config_text(&text);
    let cgroup = MemoryCgroup::new(128 << 20);
    let procs = cgroup.path.join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec {} run --config {}",
        procs.display(),
        director_bin().display(),
        path.display()
    );
    // Into the director's network namespace by setns from a thread, not `ip netns exec`: that
    // mounts a fresh /sys, without the cgroup hierarchies the director reads its limit from.
    let out = lab
        .in_namespace(Host::Director, || {
            run_with_timeout(
                Command::new("sh").args(["-c", &script]),
                Duration::from_secs(30),
            )
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the director started in a 128 MiB cgroup: {stderr}"
    );
    assert_mentions(
        &stderr,
        &[
            "director.max_connections = 4194304",
            "1 worker(s) x 4194304 entries",
            "available (cgroup memory limit)",
        ],
    );
}
