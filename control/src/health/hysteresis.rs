//! Rise and fall: how single check results become a real server's health. An up server goes
//! down after `fall` failures in a row, a down one comes back after `rise` successes in a row,
//! so one lost packet does not move traffic and a flapping server does not get it back at once.

use director_proto::Health;

/// One real server's health and the run of results pushing against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    health: Health,
    /// Consecutive results contrary to `health` (failures while up, successes while down).
    streak: u32,
}

impl Hysteresis {
    /// A server starts up, as keepalived's do: a director restart must not empty the pool
    /// before the first checks have run; a server that is really down leaves after `fall`.
    pub const fn new() -> Self {
        Hysteresis {
            health: Health::Up,
            streak: 0,
        }
    }

    /// The health now.
    pub const fn health(self) -> Health {
        self.health
    }

    /// Records one check result; returns the new health if this result changed it.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        let (contrary, needed, other) = match self.health {
            Health::Up => (!passed, fall, Health::Down),
            Health::Down => (passed, rise, Health::Up),
        };
        if !contrary {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed.max(1) {
            return None;
        }
        self.health = other;
        self.streak = 0;
        Some(other)
    }
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `results` ('+' pass, '-' fail) and returns the health after each.
    fn run(rise: u32, fall: u32, results: &str) -> String {
        let mut state = Hysteresis::new();
        results
            .chars()
            .map(|result| {
                state.record(result == '+', rise, fall);
                match state.health() {
                    Health::Up => 'U',
                    Health::Down => 'D',
                }
            })
            .collect()
    }

    #[test]
    fn starts_up_and_needs_fall_failures_in_a_row_to_go_down() {
        assert_eq!(Hysteresis::new().health(), Health::Up);
        assert_eq!(run(2, 3, "--+--+---"), "UUUUUUUUD");
    }

    #[test]
    fn needs_rise_successes_in_a_row_to_come_back() {
        assert_eq!(run(2, 1, "-+-++"), "DDDDU");
        assert_eq!(run(3, 1, "-++-+++"), "DDDDDDU");
    }

    #[test]
    fn reports_only_changes() {
        let mut state = Hysteresis::new();
        assert_eq!(state.record(false, 2, 2), None);
        assert_eq!(state.record(false, 2, 2), Some(Health::Down));
        assert_eq!(state.record(false, 2, 2), None);
        assert_eq!(state.record(true, 2, 2), None);
        assert_eq!(state.record(true, 2, 2), Some(Health::Up));
        assert_eq!(state.record(true, 2, 2), None);
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        assert_eq!(run(1, 1, "-+-+"), "DUDU");
    }
}
