//! The gate of the lab's tests, which all need root (network namespaces, XDP): as root they
//! run; without it they fail with a clear message, so a suite run without root cannot pass by
//! testing nothing, unless `DIRECTOR_SKIP_ROOT_TESTS=1` asks to skip them (each prints
//! `SKIPPED`). The same rule as `dataplane::testing::require_root`, which this crate does not
//! depend on.

use std::ffi::OsStr;

use crate::sys;

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

/// For a test that needs root: true to run it; false (after printing `SKIPPED`) when it
/// should return at once; panics without root unless [`SKIP_ROOT_TESTS`] is `1`. Tests call
/// it through [`crate::require_root!`].
#[track_caller]
pub fn run_root_test() -> bool {
    match root_test(sys::is_root(), std::env::var_os(SKIP_ROOT_TESTS).as_deref()) {
        RootTest::Run => true,
        RootTest::Skip => {
            eprintln!(
                "SKIPPED: this test needs root, network namespaces and XDP ({SKIP_ROOT_TESTS}=1)"
            );
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
            value("yes"),
            value("1 "),
            value("10"),
        ] {
            assert_eq!(root_test(false, not_skip), RootTest::Fail, "{not_skip:?}");
        }
    }
}
