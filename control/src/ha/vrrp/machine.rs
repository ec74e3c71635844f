//! The VRRPv3 state machine of RFC 5798 section 6, as a pure function of events and an explicit
//! clock: no sockets, no threads, no `Instant::now()`. The I/O loop in the parent module feeds
//! it received advertisements, timer expiries and start/stop/link events, and carries out the
//! [`Action`]s it returns, in order. Tests drive it with a virtual clock.
//!
//! Timers are deadlines ([`Router::next_deadline`]); [`Router::poll`] fires the ones due. The
//! times of section 6.1, for a Master_Adver_Interval `I` learned from the master:
//!
//! - Skew_Time = ((256 - Priority) * I) / 256
//! - Master_Down_Interval = 3 * I + Skew_Time
//!
//! computed in nanoseconds rather than centiseconds, so that the skew of a 100 ms interval
//! keeps its fraction (keepalived computes them in microseconds for the same reason).
//!
//! One state is added to the RFC's three: [`State::Fault`], the Initialize state entered
//! because the link is down (keepalived's FAULT). The RFC has no link events; without them a
//! master whose link failed would still count itself master when the link returned and would
//! take the VIPs back at once, even from a no-preempt group.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A router's settings (RFC 5798 6.1's parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// VRID.
    pub vrid: u8,
    /// Priority: 1..=254 for a backup router, 255 for the address owner.
    pub priority: u8,
    /// Advertisement_Interval: how often this router advertises as master.
    pub advert_interval: Duration,
    /// Preempt_Mode: whether a backup takes over from a lower-priority master.
    pub preempt: bool,
    /// How long after a start-up (at launch, or when its links come back) a backup follows a
    /// lower-priority master before preempting it (keepalived's `preempt_delay`): time for
    /// the director's health checks and neighbour entries to come back before it takes the
    /// VIPs. A silent master is still taken over after Master_Down_Interval.
    pub preempt_delay: Duration,
    /// Our primary address (IPv4; the link-local address for IPv6), the advertisements'
    /// source and the priority tie-breaker. One router speaks one family.
    pub primary_address: IpAddr,
}

/// Where a router is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    /// Listening; takes over when the master falls silent.
    Backup,
    /// Advertising; holds the virtual addresses.
    Master,
    /// Initialize while a link is down: silent, holding nothing, until the link returns.
    Fault,
}

impl State {
    /// The name keepalived and the RFC use, in capitals.
    pub const fn name(self) -> &'static str {
        match self {
            State::Initialize => "INITIALIZE",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the I/O side must do, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an ADVERTISEMENT with this priority (ours, or 0 when resigning).
    SendAdvert {
        /// The priority to advertise.
        priority: u8,
    },
    /// The state changed.
    Transition {
        /// The old state.
        from: State,
        /// The new state.
        to: State,
    },
}

/// An advertisement as the state machine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The sender's primary address (the IPv4 source).
    pub source: IpAddr,
    /// The sender's priority.
    pub priority: u8,
    /// The sender's Max Adver Int.
    pub advert_interval: Duration,
}

/// One VRRP router of one virtual router.
#[derive(Clone, Debug)]
pub struct Router {
    settings: Settings,
    state: State,
    /// Master_Adver_Interval: the master's interval as last heard (ours until then).
    master_advert_interval: Duration,
    /// When Master_Down_Timer fires (Backup only).
    master_down_at: Option<Instant>,
    /// When Adver_Timer fires (Master only).
    advert_at: Option<Instant>,
    /// The master as last heard: its address and priority (ourselves while master).
    master: Option<(IpAddr, u8)>,
    /// Until when a lower-priority master is followed rather than preempted (the last
    /// start-up plus `preempt_delay`).
    preempt_from: Option<Instant>,
}

impl Router {
    /// A router in Initialize; nothing happens until [`Router::startup`].
    pub fn new(settings: Settings) -> Self {
        Router {
            master_advert_interval: settings.advert_interval,
            settings,
            state: State::Initialize,
            master_down_at: None,
            advert_at: None,
            master: None,
            preempt_from: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The master as far as this router knows: its address and priority.
    pub fn master(&self) -> Option<(IpAddr, u8)> {
        self.master
    }

    /// Master_Adver_Interval.
    pub fn master_advert_interval(&self) -> Duration {
        self.master_advert_interval
    }

    /// Skew_Time for our priority and the master's interval (6.1).
    pub fn skew_time(&self) -> Duration {
        self.master_advert_interval * (256 - u32::from(self.settings.priority)) / 256
    }

    /// Master_Down_Interval (6.1).
    pub fn master_down_interval(&self) -> Duration {
        self.master_advert_interval * 3 + self.skew_time()
    }

    /// The earliest pending timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.master_down_at, self.advert_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The Startup event (6.4.1), from Initialize or Fault: the owner (priority 255) becomes
    /// master at once; everyone else listens as backup for a Master_Down_Interval first.
    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        if !matches!(self.state, State::Initialize | State::Fault) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if self.settings.priority == 255 {
            self.become_master(now, &mut actions);
        } else {
            self.master_advert_interval = self.settings.advert_interval;
            self.master_down_at = Some(now + self.master_down_interval());
            self.master = None;
            self.preempt_from = Some(now + self.settings.preempt_delay);
            self.transition(State::Backup, &mut actions);
        }
        actions
    }

    /// The Shutdown event (6.4.2, 6.4.3): a master resigns with a priority-0 advertisement so
    /// that a backup takes over after its Skew_Time; either way the timers stop.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Master => {
                actions.push(Action::SendAdvert { priority: 0 });
                self.stop_timers();
                self.transition(State::Initialize, &mut actions);
            }
            State::Backup | State::Fault => {
                self.stop_timers();
                self.transition(State::Initialize, &mut actions);
            }
            State::Initialize => {}
        }
        actions
    }

    /// A link this router depends on went down: shut down without advertising (nothing would
    /// get through) and wait in Fault.
    pub fn link_down(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::Fault {
            self.stop_timers();
            self.transition(State::Fault, &mut actions);
        }
        actions
    }

    /// The links are back: start up again from Fault (as backup, so a no-preempt group keeps
    /// its master).
    pub fn link_up(&mut self, now: Instant) -> Vec<Action> {
        if self.state == State::Fault {
            self.startup(now)
        } else {
            Vec::new()
        }
    }

    /// Fires the timers due at `now` (6.4.2: Master_Down_Timer; 6.4.3: Adver_Timer).
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Backup if self.master_down_at.is_some_and(|at| at <= now) => {
                self.become_master(now, &mut actions);
            }
            State::Master if self.advert_at.is_some_and(|at| at <= now) => {
                actions.push(Action::SendAdvert {
                    priority: self.settings.priority,
                });
                self.advert_at = Some(now + self.settings.advert_interval);
            }
            _ => {}
        }
        actions
    }

    /// An ADVERTISEMENT for our VRID that passed the packet checks (6.4.2, 6.4.3).
    pub fn receive(&mut self, now: Instant, heard: Heard) -> Vec<Action> {
        let mut actions = Vec::new();
        // 7.1: the address owner discards every advertisement.
        if self.settings.priority == 255 {
            return actions;
        }
        match self.state {
            State::Backup if heard.priority == 0 => {
                // The master resigned: take over after Skew_Time unless a higher backup does.
                self.master_down_at = Some(now + self.skew_time());
                self.master = None;
            }
            State::Backup => {
                let delayed = self.preempt_from.is_some_and(|from| now < from);
                if !self.settings.preempt || heard.priority >= self.settings.priority || delayed {
                    self.follow(now, heard);
                }
                // Otherwise a lower master is ignored, and the timer running out preempts it.
            }
            State::Master if heard.priority == 0 => {
                // Another master resigned: make sure the backups hear from us at once.
                actions.push(Action::SendAdvert {
                    priority: self.settings.priority,
                });
                self.advert_at = Some(now + self.settings.advert_interval);
            }
            State::Master => {
                let ours = (self.settings.priority, self.settings.primary_address);
                if (heard.priority, heard.source) > ours {
                    self.advert_at = None;
                    self.follow(now, heard);
                    self.transition(State::Backup, &mut actions);
                }
            }
            State::Initialize | State::Fault => {}
        }
        actions
    }

    /// New settings from a reload. The state and the running timers stay as they are, so a
    /// reload never hands over by itself; the new priority and interval count from the next
    /// advertisement sent or heard. The VRID and the primary address must not change (that is
    /// another router).
    pub fn reconfigure(&mut self, settings: Settings) {
        debug_assert_eq!(
            (settings.vrid, settings.primary_address),
            (self.settings.vrid, self.settings.primary_address)
        );
        self.settings = settings;
        if self.state == State::Master {
            self.master = Some((settings.primary_address, settings.priority));
        }
    }

    /// Backup follows `heard` as its master: learn its interval and restart the down timer.
    fn follow(&mut self, now: Instant, heard: Heard) {
        self.master_advert_interval = heard.advert_interval;
        self.master_down_at = Some(now + self.master_down_interval());
        self.master = Some((heard.source, heard.priority));
    }

    fn become_master(&mut self, now: Instant, actions: &mut Vec<Action>) {
        actions.push(Action::SendAdvert {
            priority: self.settings.priority,
        });
        self.master_down_at = None;
        self.advert_at = Some(now + self.settings.advert_interval);
        self.master = Some((self.settings.primary_address, self.settings.priority));
        self.transition(State::Master, actions);
    }

    fn stop_timers(&mut self) {
        self.master_down_at = None;
        self.advert_at = None;
        self.master = None;
    }

    fn transition(&mut self, to: State, actions: &mut Vec<Action>) {
        let from = self.state;
        if from != to {
            self.state = to;
            actions.push(Action::Transition { from, to });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
    const LOWER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const HIGHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 251));
    const INTERVAL: Duration = Duration::from_millis(100);

    fn settings(priority: u8, preempt: bool) -> Settings {
        Settings {
            vrid: 51,
            priority,
            advert_interval: INTERVAL,
            preempt,
            preempt_delay: Duration::ZERO,
            primary_address: ME,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn heard(source: IpAddr, priority: u8) -> Heard {
        Heard {
            source,
            priority,
            advert_interval: INTERVAL,
        }
    }

    fn transition(from: State, to: State) -> Action {
        Action::Transition { from, to }
    }

    fn advert(priority: u8) -> Action {
        Action::SendAdvert { priority }
    }

    /// A router of `priority` started at `t0`, in Backup.
    fn backup(t0: Instant, priority: u8, preempt: bool) -> Router {
        let mut router = Router::new(settings(priority, preempt));
        assert_eq!(
            router.startup(t0),
            [transition(State::Initialize, State::Backup)]
        );
        router
    }

    /// A router of `priority` that became master at `t0 + Master_Down_Interval`; returns it and
    /// that instant.
    fn master(t0: Instant, priority: u8, preempt: bool) -> (Router, Instant) {
        let mut router = backup(t0, priority, preempt);
        let at = t0 + router.master_down_interval();
        assert_eq!(
            router.poll(at),
            [advert(priority), transition(State::Backup, State::Master)]
        );
        (router, at)
    }

    #[test]
    fn times_follow_rfc_5798_6_1() {
        let router = Router::new(settings(100, true));
        // Skew_Time = (256 - 100) * 100 ms / 256 = 60.9375 ms; 3 * 100 ms + skew.
        assert_eq!(
            router.skew_time(),
            Duration::from_micros(60_937) + Duration::from_nanos(500)
        );
        assert_eq!(router.master_down_interval(), ms(300) + router.skew_time());
        let router = Router::new(settings(254, true));
        assert_eq!(
            router.skew_time(),
            Duration::from_micros(781) + Duration::from_nanos(250)
        );
        let router = Router::new(Settings {
            advert_interval: Duration::from_secs(1),
            ..settings(1, true)
        });
        assert_eq!(
            router.skew_time(),
            Duration::from_micros(996_093) + Duration::from_nanos(750)
        );
    }

    #[test]
    fn initialize_goes_to_backup_and_waits_a_master_down_interval() {
        let t0 = Instant::now();
        let mut router = backup(t0, 100, true);
        assert_eq!(router.state(), State::Backup);
        assert_eq!(router.master(), None);
        let down = router.master_down_interval();
        assert_eq!(router.next_deadline(), Some(t0 + down));
        assert!(router
            .poll(t0 + down.checked_sub(ms(1)).unwrap())
            .is_empty());
        assert_eq!(router.state(), State::Backup);
    }

    #[test]
    fn the_address_owner_starts_as_master() {
        let t0 = Instant::now();
        let mut router = Router::new(settings(255, true));
        assert_eq!(
            router.startup(t0),
            [advert(255), transition(State::Initialize, State::Master)]
        );
        assert_eq!(router.next_deadline(), Some(t0 + INTERVAL));
        // 7.1: it discards every advertisement, even a higher address's at 255.
        assert!(router.receive(t0, heard(HIGHER_ADDRESS, 255)).is_empty());
        assert_eq!(router.state(), State::Master);
    }

    #[test]
    fn backup_becomes_master_when_the_down_timer_fires() {
        let t0 = Instant::now();
        let (router, at) = master(t0, 100, true);
        assert_eq!(router.master(), Some((ME, 100)));
        assert_eq!(router.next_deadline(), Some(at + INTERVAL));
    }

    #[test]
    fn master_advertises_every_interval() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 100, true);
        assert!(router.poll(at + ms(99)).is_empty());
        assert_eq!(router.poll(at + INTERVAL), [advert(100)]);
        assert_eq!(router.next_deadline(), Some(at + INTERVAL * 2));
        // A late wake-up sends one advertisement, not a burst, and counts from now.
        assert_eq!(router.poll(at + ms(450)), [advert(100)]);
        assert!(router.poll(at + ms(450)).is_empty());
        assert_eq!(router.next_deadline(), Some(at + ms(550)));
    }

    #[test]
    fn backup_follows_an_equal_or_higher_master_and_learns_its_interval() {
        let t0 = Instant::now();
        let mut router = backup(t0, 100, true);
        let slow = Heard {
            advert_interval: Duration::from_secs(1),
            ..heard(LOWER_ADDRESS, 100)
        };
        assert!(router.receive(t0 + ms(50), slow).is_empty());
        assert_eq!(router.master_advert_interval(), Duration::from_secs(1));
        assert_eq!(router.master(), Some((LOWER_ADDRESS, 100)));
        let down = router.master_down_interval();
        assert_eq!(
            down,
            Duration::from_millis(3000) + Duration::from_micros(609_375)
        );
        assert_eq!(router.next_deadline(), Some(t0 + ms(50) + down));
        // The old, shorter deadline no longer fires.
        assert!(router.poll(t0 + ms(400)).is_empty());
        let higher = heard(HIGHER_ADDRESS, 200);
        assert!(router.receive(t0 + ms(500), higher).is_empty());
        assert_eq!(router.master(), Some((HIGHER_ADDRESS, 200)));
        assert_eq!(router.master_advert_interval(), INTERVAL);
    }

    #[test]
    fn preempting_backup_ignores_a_lower_master_and_takes_over() {
        let t0 = Instant::now();
        let mut router = backup(t0, 150, true);
        let down = router.master_down_interval();
        for k in 0..10 {
            assert!(router
                .receive(t0 + ms(k * 30), heard(HIGHER_ADDRESS, 100))
                .is_empty());
        }
        assert_eq!(router.master(), None, "a lower master is not followed");
        assert_eq!(
            router.poll(t0 + down),
            [advert(150), transition(State::Backup, State::Master)]
        );
    }

    #[test]
    fn non_preempting_backup_follows_a_lower_master() {
        let t0 = Instant::now();
        let mut router = backup(t0, 150, false);
        let mut now = t0;
        for _ in 0..20 {
            now += INTERVAL;
            assert!(router.receive(now, heard(LOWER_ADDRESS, 100)).is_empty());
            assert!(router.poll(now).is_empty());
        }
        assert_eq!(router.state(), State::Backup);
        assert_eq!(router.master(), Some((LOWER_ADDRESS, 100)));
        // When that master falls silent, this one still takes over.
        let down = router.master_down_interval();
        assert_eq!(
            router.poll(now + down),
            [advert(150), transition(State::Backup, State::Master)]
        );
    }

    #[test]
    fn backup_hearing_priority_zero_takes_over_after_skew_time() {
        let t0 = Instant::now();
        let mut router = backup(t0, 100, true);
        assert!(router.receive(t0, heard(HIGHER_ADDRESS, 200)).is_empty());
        let resign = t0 + ms(20);
        assert!(router.receive(resign, heard(HIGHER_ADDRESS, 0)).is_empty());
        assert_eq!(router.master(), None);
        let skew = router.skew_time();
        assert_eq!(router.next_deadline(), Some(resign + skew));
        assert!(skew < router.master_down_interval() / 4);
        assert_eq!(
            router.poll(resign + skew),
            [advert(100), transition(State::Backup, State::Master)]
        );
    }

    #[test]
    fn higher_backup_wins_the_race_after_a_resignation() {
        // Both backups hear the priority 0; the higher one's shorter skew fires first, and its
        // advertisement stops the lower one.
        let t0 = Instant::now();
        let mut high = backup(t0, 200, true);
        let mut low = backup(t0, 100, true);
        for router in [&mut high, &mut low] {
            router.receive(t0, heard(LOWER_ADDRESS, 0));
        }
        assert!(high.skew_time() < low.skew_time());
        let at = t0 + high.skew_time();
        assert_eq!(high.poll(at)[0], advert(200));
        assert!(low.poll(at).is_empty());
        assert!(low.receive(at, heard(HIGHER_ADDRESS, 200)).is_empty());
        assert!(low.poll(t0 + low.skew_time()).is_empty());
        assert_eq!(low.state(), State::Backup);
    }

    #[test]
    fn master_hearing_priority_zero_advertises_at_once() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 100, true);
        let when = at + ms(30);
        assert_eq!(
            router.receive(when, heard(HIGHER_ADDRESS, 0)),
            [advert(100)]
        );
        assert_eq!(router.state(), State::Master);
        assert_eq!(router.next_deadline(), Some(when + INTERVAL));
    }

    #[test]
    fn master_yields_to_a_higher_priority() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 100, true);
        let slow = Heard {
            advert_interval: ms(200),
            ..heard(LOWER_ADDRESS, 101)
        };
        assert_eq!(
            router.receive(at, slow),
            [transition(State::Master, State::Backup)]
        );
        assert_eq!(router.master(), Some((LOWER_ADDRESS, 101)));
        assert_eq!(router.master_advert_interval(), ms(200));
        assert_eq!(
            router.next_deadline(),
            Some(at + router.master_down_interval())
        );
        // No more advertisements from the old master.
        assert!(router.poll(at + ms(300)).is_empty());
    }

    #[test]
    fn master_ties_break_on_the_higher_primary_address() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 100, true);
        assert!(router.receive(at, heard(LOWER_ADDRESS, 100)).is_empty());
        assert_eq!(router.state(), State::Master);
        assert_eq!(
            router.receive(at, heard(HIGHER_ADDRESS, 100)),
            [transition(State::Master, State::Backup)]
        );
    }

    #[test]
    fn master_discards_a_lower_priority() {
        let t0 = Instant::now();
        for preempt in [true, false] {
            let (mut router, at) = master(t0, 100, preempt);
            assert!(router.receive(at, heard(HIGHER_ADDRESS, 99)).is_empty());
            assert_eq!(router.state(), State::Master);
            assert_eq!(router.next_deadline(), Some(at + INTERVAL));
        }
    }

    #[test]
    fn equal_priority_backup_does_not_preempt() {
        let t0 = Instant::now();
        let mut router = backup(t0, 100, true);
        let mut now = t0;
        for _ in 0..20 {
            now += INTERVAL;
            router.receive(now, heard(LOWER_ADDRESS, 100));
            assert!(router.poll(now).is_empty());
        }
        assert_eq!(router.state(), State::Backup);
    }

    #[test]
    fn master_shutdown_resigns_with_priority_zero() {
        let t0 = Instant::now();
        let (mut router, _) = master(t0, 100, true);
        assert_eq!(
            router.shutdown(),
            [advert(0), transition(State::Master, State::Initialize)]
        );
        assert_eq!(router.next_deadline(), None);
        assert!(router.shutdown().is_empty());
    }

    #[test]
    fn backup_shutdown_is_silent() {
        let t0 = Instant::now();
        let mut router = backup(t0, 100, true);
        assert_eq!(
            router.shutdown(),
            [transition(State::Backup, State::Initialize)]
        );
        assert_eq!(router.next_deadline(), None);
        assert!(router.poll(t0 + Duration::from_secs(10)).is_empty());
        assert!(router.receive(t0, heard(HIGHER_ADDRESS, 200)).is_empty());
    }

    #[test]
    fn link_down_is_a_silent_fault_and_link_up_restarts_as_backup() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 150, false);
        assert_eq!(
            router.link_down(),
            [transition(State::Master, State::Fault)]
        );
        assert!(router.link_down().is_empty());
        assert_eq!(router.next_deadline(), None);
        assert!(router.receive(at, heard(LOWER_ADDRESS, 100)).is_empty());
        assert!(router.poll(at + Duration::from_secs(5)).is_empty());
        let back = at + Duration::from_secs(5);
        assert_eq!(
            router.link_up(back),
            [transition(State::Fault, State::Backup)]
        );
        // No preemption: the master elected meanwhile keeps the addresses.
        let mut now = back;
        for _ in 0..20 {
            now += INTERVAL;
            router.receive(now, heard(LOWER_ADDRESS, 100));
            assert!(router.poll(now).is_empty());
        }
        assert_eq!(router.state(), State::Backup);
        assert!(
            router.link_up(now).is_empty(),
            "link up while running is a no-op"
        );
    }

    #[test]
    fn reconfigure_keeps_the_state_and_the_timers() {
        let t0 = Instant::now();
        let (mut router, at) = master(t0, 150, true);
        router.reconfigure(Settings {
            priority: 120,
            advert_interval: ms(200),
            ..settings(150, true)
        });
        assert_eq!(router.state(), State::Master);
        assert_eq!(router.next_deadline(), Some(at + INTERVAL));
        assert_eq!(router.master(), Some((ME, 120)));
        assert_eq!(router.poll(at + INTERVAL), [advert(120)]);
        assert_eq!(router.next_deadline(), Some(at + INTERVAL + ms(200)));

        let mut router = backup(t0, 100, true);
        router.receive(t0, heard(HIGHER_ADDRESS, 150));
        let deadline = router.next_deadline();
        router.reconfigure(settings(200, true));
        assert_eq!(router.state(), State::Backup);
        assert_eq!(router.next_deadline(), deadline);
    }

    #[test]
    fn a_preempt_delay_follows_a_lower_master_for_a_while_after_each_start_up() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(2);
        let mut router = Router::new(Settings {
            preempt_delay: delay,
            ..settings(150, true)
        });
        router.startup(t0);
        // The lower master advertises every interval: followed while the delay runs, so the
        // down timer keeps moving and never fires.
        let mut now = t0;
        while now < t0 + delay {
            assert!(router.receive(now, heard(LOWER_ADDRESS, 100)).is_empty());
            assert_eq!(router.master(), Some((LOWER_ADDRESS, 100)));
            now += INTERVAL;
            assert!(router.poll(now).is_empty(), "preempted at {:?}", now - t0);
        }
        // Past it, the lower master is ignored and the down timer preempts it.
        router.receive(now, heard(LOWER_ADDRESS, 100));
        let down = router.next_deadline().unwrap();
        assert_eq!(
            router.poll(down),
            [advert(150), transition(State::Backup, State::Master)]
        );

        // The link goes down and comes back: the delay counts again from the new start-up.
        router.link_down();
        let back = down + Duration::from_secs(10);
        router.link_up(back);
        assert!(router.receive(back, heard(LOWER_ADDRESS, 100)).is_empty());
        assert_eq!(router.master(), Some((LOWER_ADDRESS, 100)));
        assert!(router.poll(back + INTERVAL).is_empty());
        assert_eq!(router.state(), State::Backup);
        // A master that falls silent is still taken over after Master_Down_Interval.
        let silent = back + INTERVAL;
        router.receive(silent, heard(LOWER_ADDRESS, 100));
        let down = silent + router.master_down_interval();
        assert_eq!(
            router.poll(down),
            [advert(150), transition(State::Backup, State::Master)]
        );
    }

    #[test]
    fn nothing_happens_before_startup() {
        let t0 = Instant::now();
        let mut router = Router::new(settings(100, true));
        assert!(router.poll(t0 + Duration::from_secs(60)).is_empty());
        assert!(router.receive(t0, heard(HIGHER_ADDRESS, 200)).is_empty());
        assert!(router.shutdown().is_empty());
        assert_eq!(router.state(), State::Initialize);
        assert_eq!(router.next_deadline(), None);
    }

    #[test]
    fn two_routers_on_a_virtual_wire_elect_the_higher() {
        // Every advertisement one sends, the other hears at the same instant.
        let t0 = Instant::now();
        let mut routers = [
            Router::new(Settings {
                primary_address: LOWER_ADDRESS,
                ..settings(100, true)
            }),
            Router::new(settings(150, true)),
        ];
        for router in &mut routers {
            router.startup(t0);
        }
        let mut now = t0;
        for _ in 0..100 {
            now += ms(10);
            for index in 0..2 {
                for action in routers[index].poll(now) {
                    if let Action::SendAdvert { priority } = action {
                        let source = routers[index].settings().primary_address;
                        let heard = Heard {
                            source,
                            priority,
                            advert_interval: INTERVAL,
                        };
                        routers[1 - index].receive(now, heard);
                    }
                }
            }
        }
        assert_eq!(routers[0].state(), State::Backup);
        assert_eq!(routers[1].state(), State::Master);
        assert_eq!(routers[0].master(), Some((ME, 150)));
    }
}
