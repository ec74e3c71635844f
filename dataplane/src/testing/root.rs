//! Tests that need root (BPF_PROG_TEST_RUN, XDP, AF_XDP, network namespaces) run as root and,
//! without it, fail with a clear message: a suite run without root must not pass by testing
//! nothing. Setting `DIRECTOR_SKIP_ROOT_TESTS=1` asks to skip them instead (each prints
//! `SKIPPED`).
//!
//! Safe code only: the effective uid is read from `/proc/self/status`, not through libc.

use std::ffi::OsStr;

/// The environment variable that, set to `1`, skips tests needing root instead of failing them.
pub const SKIP_ROOT_TESTS: &str = "DIRECTOR_SKIP_ROOT_TESTS";

/// What a test that needs root does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTest {
    /// Root: run it.
    Run,
    /// Not root and asked to skip: return, saying so.
    Skip,
    /// Not root and not asked to skip: fail.
    Fail,
}

/// The decision, from whether the process is root and the value of [`SKIP_ROOT_TESTS`] (only
/// exactly `1` skips; unset, empty, `0` or anything else does not).
pub fn root_test(is_root: bool, skip: Option<&OsStr>) -> RootTest {
    if is_root {
        RootTest::Run
    } else if skip.is_some_and(|value| value == "1") {
        RootTest::Skip
    } else {
        RootTest::Fail
    }
}

/// Whether the process's effective uid is 0 (the `Uid:` line of `/proc/self/status` lists the
/// real, effective, saved and filesystem uids).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// For a test that needs root: true to run it; false (after printing `SKIPPED`) when it
/// should return at once; panics without root unless [`SKIP_ROOT_TESTS`] is `1`.
///
/// ```no_run
/// if !dataplane::testing::require_root() {
///     return;
/// }
/// ```
#[track_caller]
pub fn require_root() -> bool {
    match root_test(is_root(), std::env::var_os(SKIP_ROOT_TESTS).as_deref()) {
        RootTest::Run => true,
        RootTest::Skip => {
            eprintln!("SKIPPED: this test needs root ({SKIP_ROOT_TESTS}=1)");
            false
        }
        RootTest::Fail => {
            panic!("needs root: run as root, or set {SKIP_ROOT_TESTS}=1 to skip")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_one_skips_and_root_always_runs() {
        let value = |text: &'static str| Some(OsStr::new(text));
        assert_eq!(root_test(true, None), RootTest::Run);
        assert_eq!(root_test(true, value("1")), RootTest::Run);
        assert_eq!(root_test(false, value("1")), RootTest::Skip);
        for not_skip in [
            None,
            value(""),
            value("0"),
            value("true"),
            value(" 1"),
            value("11"),
        ] {
            assert_eq!(root_test(false, not_skip), RootTest::Fail, "{not_skip:?}");
        }
    }

    #[test]
    fn the_effective_uid_is_read() {
        // Whoever runs this, /proc/self/status names an effective uid; its owner is that uid.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let effective = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            .unwrap();
        assert_eq!(is_root(), effective == "0");
    }
}
