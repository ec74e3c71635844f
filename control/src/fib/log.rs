//! At most one log line per kind of bad input every ten seconds, so that a route flapping or a
//! neighbour failing over and over is logged once, not a hundred times a second.
//!
//! What it must not do: count (the counters do), or hold more than one timestamp per kind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest time between two log lines of the same kind.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: HashMap<&'static str, Instant>,
}

impl RateLimitedLog {
    /// Whether a line of `kind` may be logged at `now` (and if so, records it).
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> bool {
        match self.last.get(kind) {
            Some(&last) if now.duration_since(last) < LOG_INTERVAL => false,
            _ => {
                self.last.insert(kind, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval() {
        let mut log = RateLimitedLog::default();
        let start = Instant::now();
        assert!(log.allow("blackhole", start));
        assert!(!log.allow("blackhole", start + Duration::from_secs(9)));
        assert!(log.allow("not_served", start + Duration::from_secs(9)));
        assert!(log.allow("blackhole", start + LOG_INTERVAL));
    }
}
