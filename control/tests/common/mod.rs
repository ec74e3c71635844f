//! Throwaway network namespaces for control's integration tests: two namespaces joined by a
//! veth, each end up with its addresses. Both namespaces are deleted by a Drop guard, also when
//! a test fails. They need root: each test using them starts with
//! `dataplane::testing::require_root()`, which fails it without root unless
//! `DIRECTOR_SKIP_ROOT_TESTS=1` asks to skip it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `ip ARGS`, panicking with its stderr on failure; returns its stdout.
pub fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One network namespace, by name (under `/run/netns`).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// Runs `ip -n NAME ARGS`, as [`ip`] does.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `body` on a thread that has entered the namespace (setns affects only the calling
    /// thread; sockets opened there stay in it), re-raising its panic here.
    pub fn enter<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let namespace = File::open(format!("/run/netns/{}", self.name)).expect("open namespace");
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on a valid namespace descriptor; it only changes this thread's
            // network namespace, and this thread is ours and ends with `body`.
            #[expect(unsafe_code, reason = "setns has no safe wrapper in std")]
            let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
            body()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// One end of the veth: its namespace's name suffix, the link's name and its addresses.
pub struct End<'a> {
    pub suffix: &'a str,
    pub link: &'a str,
    pub addresses: &'a [&'a str],
}

/// Two namespaces, `a` and `b`, joined by a veth; deleted on drop.
pub struct VethPair {
    pub a: Namespace,
    pub b: Namespace,
}

impl VethPair {
    /// Namespaces `<prefix>-<pid>-<n><suffix>` (`n` counts the pairs of this process), with
    /// `lo` and the veth's ends up and addressed.
    pub fn new(prefix: &str, a: &End, b: &End) -> VethPair {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (a_name, b_name) = (format!("{name}{}", a.suffix), format!("{name}{}", b.suffix));
        ip(&["netns", "add", &a_name]);
        // From here on the guard cleans up, whatever fails next.
        let pair = VethPair {
            a: Namespace { name: a_name },
            b: Namespace { name: b_name },
        };
        let b_netns = pair.b.name.as_str();
        ip(&["netns", "add", b_netns]);
        pair.a.ip(&[
            "link", "add", a.link, "type", "veth", "peer", "name", b.link, "netns", b_netns,
        ]);
        for (namespace, end) in [(&pair.a, a), (&pair.b, b)] {
            namespace.ip(&["link", "set", "lo", "up"]);
            for address in end.addresses {
                namespace.ip(&["addr", "add", address, "dev", end.link]);
            }
            namespace.ip(&["link", "set", end.link, "up"]);
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for namespace in [&self.a, &self.b] {
            let _ = Command::new("ip")
                .args(["netns", "del", &namespace.name])
                .status();
        }
    }
}
