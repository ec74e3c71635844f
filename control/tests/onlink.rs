//! `director check` on DR real servers that are, or are not, on a directly connected network
//! of the client-side interface, inside a throwaway network namespace (needs root).
//!
//! Layout: namespace `dirtest-onlink-<pid>-<n>` holds `eth0` with 192.0.2.1/24; its veth peer
//! lives in `dirtest-onlink-<pid>-<n>-peer`. Both are deleted by a Drop guard.

#[expect(
    dead_code,
    reason = "this test runs commands in the namespace, never enters it"
)]
mod common;

use std::fmt::Write as _;
use std::process::{Command, Output};

use common::{End, VethPair};

fn lab() -> VethPair {
    VethPair::new(
        "dirtest-onlink",
        &End {
            suffix: "",
            link: "eth0",
            addresses: &["192.0.2.1/24"],
        },
        &End {
            suffix: "-peer",
            link: "eth0",
            addresses: &["192.0.2.2/24"],
        },
    )
}

/// A one-service DR config on `interface` over `servers`.
fn dr_config(interface: &str, servers: &[&str]) -> String {
    let mut text = format!(
        "[director]\ninterfaces = [\"{interface}\"]\n\n[[service]]\nname = \"web\"\n\
         vip = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\nscheduler = \"rr\"\n\
         forwarding = \"dr\"\n"
    );
    for server in servers {
        let _ = write!(text, "\n[[service.backend]]\naddress = \"{server}\"\n");
    }
    text
}

/// Runs `director check` on `config` inside `namespace`.
fn check_in(namespace: &str, config: &str) -> Output {
    let path = std::env::temp_dir().join(format!(
        "dirtest-onlink-{}-{namespace}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config).unwrap();
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_director")])
        .args(["check", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    output
}

#[test]
fn check_refuses_an_off_link_dr_server_and_names_it() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let output = check_in(
        &lab.a.name,
        &dr_config("eth0", &["192.0.2.11", "203.0.113.5"]),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "service[0] \"web\": backend[1].address = \"203.0.113.5\": forwarding = \"dr\" needs \
             the real server on a directly connected network of eth0 (its prefixes: \
             192.0.2.1/24); use \"tun\" for routed real servers"
        ),
        "{stderr}"
    );
}

#[test]
fn check_accepts_on_link_dr_servers() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let output = check_in(
        &lab.a.name,
        &dr_config("eth0", &["192.0.2.11", "192.0.2.12"]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("note:"), "{stdout}");
}

#[test]
fn check_without_the_interface_skips_the_on_link_part_with_a_note() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    let output = check_in(&lab.a.name, &dr_config("eth9", &["203.0.113.5"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("note: DR real servers not checked to be on-link (interface eth9"),
        "{stdout}"
    );
}

#[test]
fn check_reads_the_client_sides_ipv6_prefixes() {
    if !dataplane::testing::require_root() {
        return;
    }
    let lab = lab();
    lab.a
        .ip(&["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"]);
    let dr6 = |server: &str| {
        dr_config("eth0", &["192.0.2.11"])
            + &format!(
                "\n[[service]]\nname = \"web6\"\nvip = \"2001:db8::10\"\nport = 80\n\
                 protocol = \"tcp\"\nscheduler = \"rr\"\nforwarding = \"dr\"\n\
                 [[service.backend]]\naddress = \"{server}\"\n"
            )
    };
    let output = check_in(&lab.a.name, &dr6("2001:db8::11"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = check_in(&lab.a.name, &dr6("2001:db8:1::11"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // The kernel's link-local prefix is not listed: no real server is configured by one.
    assert!(
        stderr.contains(
            "service[1] \"web6\": backend[0].address = \"2001:db8:1::11\": forwarding = \"dr\" \
             needs the real server on a directly connected network of eth0 (its prefixes: \
             192.0.2.1/24, 2001:db8::1/64)"
        ),
        "{stderr}"
    );
}
