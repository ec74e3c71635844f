//! The `send_expect` check's judging: after the configured bytes are sent, the answer must
//! contain the expected text (keepalived's SMTP/generic "send, then expect" checks). The TCP
//! probe ([`super::tcp`]) does the connecting, sending and reading; this only judges.

use super::check::{excerpt, find, Judge, Verdict};

/// Healthy once the answer contains `expected`.
#[derive(Clone, Debug)]
pub struct Contains {
    /// The text the answer must contain.
    pub expected: String,
}

impl Judge for Contains {
    fn judge(&self, answer: &[u8], closed: bool) -> Verdict {
        let expected = &self.expected;
        if find(answer, expected.as_bytes()).is_some() {
            Verdict::Pass
        } else if closed {
            Verdict::Fail(if answer.is_empty() {
                format!("closed without answering (expected {expected:?})")
            } else {
                format!("answer lacks {expected:?}: {}", excerpt(answer))
            })
        } else {
            Verdict::NeedMore
        }
    }
}
