//! The `director` binary's `check` subcommand on good and bad configurations.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn director(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_director"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// `director` run in a network namespace of its own (as root), so that what `check` reads
/// from the kernel (the client side's connected prefixes, for DR real servers) is the same on
/// every machine: no `eth0` there, so that one check is skipped with a note.
fn director_without_host_interfaces(args: &[&str]) -> Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    if !root {
        return director(args);
    }
    Command::new("unshare")
        .arg("--net")
        .arg(env!("CARGO_BIN_EXE_director"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "dirtest-config-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn check_accepts_shipped_configs() {
    for name in ["demo.toml", "reference.toml"] {
        let path = configs().join(name);
        let output =
            director_without_host_interfaces(&["check", "--config", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.starts_with(&format!("configuration {} is ok\n", path.display())),
            "{stdout}"
        );
    }
    let demo = configs().join("demo.toml");
    let output = director_without_host_interfaces(&["check", "--config", demo.to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(
            "  web: tcp 192.0.2.10:80 maglev dr -> 192.0.2.11 (weight 1), 192.0.2.12 (weight 1), 192.0.2.13 (weight 1)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn check_rejects_bad_config_with_named_key() {
    let demo = std::fs::read_to_string(configs().join("demo.toml")).unwrap();
    let bad = TempFile::new(&demo.replace("scheduler = \"maglev\"", "scheduler = \"fastest\""));
    let output = director(&["check", "--config", bad.0.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "director: configuration {}: service[0] \"web\": scheduler = \"fastest\": unknown scheduler, \
             expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, maglev, mh\n",
            bad.0.display()
        )
    );
}

#[test]
fn check_reports_missing_file_and_syntax_errors() {
    let output = director(&["check", "--config", "/nonexistent/director.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("director: cannot read configuration file /nonexistent/director.toml: "),
        "{stderr}"
    );

    let broken = TempFile::new("[director\ninterfaces = [\"eth0\"]\n");
    let output = director(&["check", "--config", broken.0.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("TOML syntax error at line 1, column"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_nonzero() {
    let output = director(&["check"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
    let output = director(&["frobnicate"]);
    assert!(!output.status.success());
}

#[test]
fn check_prints_ipv6_services_in_brackets_beside_ipv4_ones() {
    let demo = std::fs::read_to_string(configs().join("demo.toml")).unwrap();
    let dual = TempFile::new(&format!(
        "{demo}\n[[service]]\nname = \"web6\"\nvip = \"2001:db8::10\"\nport = 80\n\
         protocol = \"tcp\"\nscheduler = \"maglev\"\nforwarding = \"dr\"\n\
         [[service.backend]]\naddress = \"2001:db8::11\"\n"
    ));
    let output = director_without_host_interfaces(&["check", "--config", dual.0.to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("  web: tcp 192.0.2.10:80 maglev dr -> "),
        "{stdout}"
    );
    assert!(
        stdout.contains("  web6: tcp [2001:db8::10]:80 maglev dr -> 2001:db8::11 (weight 1)\n"),
        "{stdout}"
    );
    // DR cannot send an IPv6 VIP's frames to an IPv4 real server: refused, naming both.
    let mixed = TempFile::new(&format!(
        "{demo}\n[[service]]\nname = \"web6\"\nvip = \"2001:db8::10\"\nport = 80\n\
         protocol = \"tcp\"\nscheduler = \"maglev\"\nforwarding = \"dr\"\n\
         [[service.backend]]\naddress = \"192.0.2.21\"\n"
    ));
    let output = director(&["check", "--config", mixed.0.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "service[1] \"web6\": backend[0].address = \"192.0.2.21\" (IPv4): the vip \
             \"2001:db8::10\" is IPv6"
        ),
        "{stderr}"
    );
}
