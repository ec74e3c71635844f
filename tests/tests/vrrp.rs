//! End-to-end: VRRPv3 failover between directors, at the protocol level. The control crate's
//! VRRP routers run inside the lab's director namespaces (without the director binary), with
//! a small stand-in for what control does on their events: add the VIP to `eth0` and announce
//! it on becoming master, remove it otherwise. Peers are other routers of ours and keepalived.
//!
//! Times are measured and printed; assertions allow generous slack over what the intervals
//! imply (RFC 5798 6.1: a backup of priority P takes over 3 intervals + (256 - P)/256 of one
//! after the master's last advertisement, or (256 - P)/256 of one after a priority-0 one).

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use control::ha::vrrp::{HaEvent, Vrrp, VrrpState, VrrpStatus};
use control::netlink::{self, Netlink};
use control::HaConfig;
use crossbeam_channel::{Receiver, Select};
use director_lab::{
    director_ip, require_root, vip_url, Host, Keepalived, KeepalivedOptions, KeepalivedState, Lab,
    LabOptions, LoadOptions, VIP,
};

/// The advertisement interval of most tests.
const INTERVAL: Duration = Duration::from_millis(100);
/// Slack allowed over a computed takeover time (scheduling, polling, a loaded CI machine).
const SLACK: Duration = Duration::from_millis(500);
/// How often a wait looks at conditions that are not events (keepalived's log).
const STEP: Duration = Duration::from_millis(10);
/// How long most waits allow: an election, a takeover, keepalived reaching a state.
const WITHIN: Duration = Duration::from_secs(5);

/// The tests measure handover times: one at a time, so they do not skew each other's.
static SERIAL: Mutex<()> = Mutex::new(());

/// A test's lab, holding [`SERIAL`] until the lab is gone.
struct SerialLab {
    lab: Lab,
    _serial: MutexGuard<'static, ()>,
}

impl Deref for SerialLab {
    type Target = Lab;

    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// The DR lab with `directors` directors and a real server, once no other test runs.
fn lab(directors: usize) -> SerialLab {
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    SerialLab {
        lab: Lab::dr(LabOptions::directors(directors, 1)),
        _serial: serial,
    }
}

fn vip() -> IpAddr {
    VIP.parse().unwrap()
}

fn ha(priority: u8, preempt: bool) -> HaConfig {
    HaConfig {
        interface: "eth0".into(),
        vrid: 51,
        priority,
        advert_interval: INTERVAL,
        preempt,
        preempt_delay: Duration::ZERO,
        unicast_peers: Vec::new(),
        sync: false,
        sync_id: 51,
        sync_port: 8848,
        sync_key: None,
        server_address: None,
        server_address6: None,
    }
}

/// Master_Down_Interval of a backup of `priority` following a master advertising every
/// `interval` (RFC 5798 6.1).
fn master_down_interval(priority: u8, interval: Duration) -> Duration {
    interval * 3 + skew_time(priority, interval)
}

fn skew_time(priority: u8, interval: Duration) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}

/// One of our VRRP routers on a lab director, and what control would do with its events.
struct Router {
    host: Host,
    vrrp: Option<Vrrp>,
    events: Option<Receiver<HaEvent>>,
    /// Opened in the router's namespace, so usable from the test's thread.
    netlink: Netlink,
    ifindex: u32,
    /// `host`'s namespace, for the IPv6 VIPs (netlink here adds IPv4 addresses only).
    namespace: String,
    vips: Vec<IpAddr>,
    /// Every event, with when the test saw it.
    seen: Vec<(Instant, HaEvent)>,
}

impl Router {
    fn start(lab: &Lab, host: Host, config: &HaConfig, vips: &[IpAddr]) -> Router {
        let (vrrp, netlink, ifindex) = lab.in_namespace(host, || {
            let vrrp = Vrrp::start(config, "eth0", vips)
                .unwrap_or_else(|e| panic!("starting VRRP on {host}: {e}"));
            let netlink = Netlink::open().unwrap();
            let ifindex = netlink::interface_index("eth0").unwrap();
            (vrrp, netlink, ifindex)
        });
        if vips.iter().any(IpAddr::is_ipv4) {
            assert_eq!(
                vrrp.primary_address().to_string(),
                host.address().unwrap(),
                "advertisements come from {host}'s own address"
            );
        }
        Router {
            host,
            events: Some(vrrp.events().clone()),
            vrrp: Some(vrrp),
            netlink,
            ifindex,
            namespace: lab.namespace(host),
            vips: vips.to_vec(),
            seen: Vec::new(),
        }
    }

    fn vrrp(&self) -> &Vrrp {
        self.vrrp.as_ref().expect("the router is running")
    }

    fn vrrp_mut(&mut self) -> &mut Vrrp {
        self.vrrp.as_mut().expect("the router is running")
    }

    fn status(&self) -> VrrpStatus {
        self.vrrp().status()
    }

    fn state(&self) -> VrrpState {
        self.status().state
    }

    /// The state as far as the events handled so far tell (so the VIPs are where it says).
    fn role(&self) -> Option<VrrpState> {
        self.seen.iter().rev().find_map(|(_, event)| match event {
            HaEvent::BecameMaster => Some(VrrpState::Master),
            HaEvent::BecameBackup => Some(VrrpState::Backup),
            HaEvent::Fault => Some(VrrpState::Fault),
            HaEvent::PeerSeen { .. } => None,
        })
    }

    /// Does what control does on `event`.
    fn handle(&mut self, event: HaEvent) {
        self.seen.push((Instant::now(), event));
        match event {
            HaEvent::BecameMaster => {
                for index in 0..self.vips.len() {
                    self.set_vip(self.vips[index], true);
                }
                self.vrrp().announce_vips().unwrap();
            }
            HaEvent::BecameBackup | HaEvent::Fault => self.release_vips(),
            HaEvent::PeerSeen { .. } => {}
        }
    }

    fn release_vips(&mut self) {
        for index in 0..self.vips.len() {
            self.set_vip(self.vips[index], false);
        }
    }

    /// Adds or removes one VIP on `eth0`: a /32 by netlink, a /128 (no DAD) by `ip`.
    fn set_vip(&mut self, vip: IpAddr, add: bool) {
        match (vip, add) {
            (IpAddr::V4(vip), true) => {
                self.netlink.add_address(self.ifindex, vip, 32).unwrap();
            }
            (IpAddr::V4(vip), false) => self.netlink.remove_address(self.ifindex, vip, 32).unwrap(),
            (IpAddr::V6(vip), _) => {
                let address = format!("{vip}/128");
                let mut args = vec!["-n", &self.namespace, "-6", "addr"];
                if add {
                    args.extend(["add", &address, "dev", "eth0", "nodad"]);
                } else {
                    args.extend(["del", &address, "dev", "eth0"]);
                }
                // Removing an address not held (a backup's first event) fails harmlessly.
                let status = std::process::Command::new("ip")
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(
                    status.status.success() || !add,
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&status.stderr)
                );
            }
        }
    }

    /// When the test last saw `event`.
    fn last(&self, event: HaEvent) -> Option<Instant> {
        self.seen
            .iter()
            .rev()
            .find(|(_, seen)| *seen == event)
            .map(|(at, _)| *at)
    }

    /// How long after `since` the test saw the router last become master.
    fn master_after(&self, since: Instant) -> Duration {
        self.last(HaEvent::BecameMaster).unwrap() - since
    }

    /// Mastership changes seen (Master, Backup, Fault events).
    fn transitions(&self) -> usize {
        self.seen
            .iter()
            .filter(|(_, event)| !matches!(event, HaEvent::PeerSeen { .. }))
            .count()
    }

    /// Stops the router (priority 0 if master), then removes the VIPs, as control would.
    fn shutdown(&mut self) -> VrrpStatus {
        self.events = None;
        let status = self.vrrp.take().expect("running").shutdown();
        self.release_vips();
        status
    }
}

/// Routers whose events are handled while a test waits.
struct Group {
    routers: Vec<Router>,
}

impl Group {
    /// Handles events until `done` holds, at most `timeout`; panics naming `what` with every
    /// router's status otherwise. Returns how long it took.
    fn run_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Group) -> bool,
    ) -> Duration {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            if done(self) {
                return start.elapsed();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{what}: not within {timeout:?}; {}",
                self.describe()
            );
            self.pump((deadline - now).min(STEP));
        }
    }

    /// Handles events until router `index` is in `state` (see [`is`]), at most `timeout`.
    fn run_until_state(&mut self, what: &str, timeout: Duration, index: usize, state: VrrpState) {
        self.run_until(what, timeout, |g| is(state)(&g.routers[index]));
    }

    /// Handles events until router `index` is elected (see [`elected`]), at most [`WITHIN`].
    fn run_until_elected(&mut self, what: &str, index: usize) -> Duration {
        self.run_until(what, WITHIN, |g| elected(g, index))
    }

    /// Handles events for `duration`; panics if mastership changed meanwhile.
    #[track_caller]
    fn assert_steady(&mut self, duration: Duration) {
        let changes = self.run_for(duration);
        assert_eq!(changes, 0, "{}", self.describe());
    }

    /// Every router's count of state transitions, as its status has it.
    fn transition_counts(&self) -> Vec<u64> {
        self.routers
            .iter()
            .map(|r| r.status().counters.transitions)
            .collect()
    }

    /// Handles events for `duration`; returns the number of mastership changes seen meanwhile.
    fn run_for(&mut self, duration: Duration) -> usize {
        let before: usize = self.routers.iter().map(Router::transitions).sum();
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.pump((end - Instant::now()).min(STEP));
        }
        self.routers.iter().map(Router::transitions).sum::<usize>() - before
    }

    /// Waits at most `wait` for one event of any running router and handles it.
    fn pump(&mut self, wait: Duration) {
        let receivers: Vec<(usize, Receiver<HaEvent>)> = self
            .routers
            .iter()
            .enumerate()
            .filter_map(|(index, router)| router.events.clone().map(|events| (index, events)))
            .collect();
        if receivers.is_empty() {
            thread::sleep(wait);
            return;
        }
        let mut select = Select::new();
        for (_, events) in &receivers {
            select.recv(events);
        }
        let Ok(ready) = select.ready_timeout(wait) else {
            return;
        };
        let (index, events) = &receivers[ready];
        if let Ok(event) = events.try_recv() {
            self.routers[*index].handle(event);
        }
    }

    fn describe(&self) -> String {
        self.routers
            .iter()
            .map(|router| match &router.vrrp {
                Some(vrrp) => format!("\n  {}: {:?}", router.host, vrrp.status()),
                None => format!("\n  {}: stopped", router.host),
            })
            .collect()
    }
}

/// Starts our routers, `(host, config)`, advertising the lab's VIP.
fn start_routers(lab: &Lab, routers: &[(Host, HaConfig)]) -> Group {
    Group {
        routers: routers
            .iter()
            .map(|(host, config)| Router::start(lab, *host, config, &[vip()]))
            .collect(),
    }
}

/// Starts `director` (150) and `director2` (100), preempting or not, and waits until `director`
/// is elected.
fn primary_and_backup(lab: &Lab, preempt: bool) -> Group {
    let mut group = start_routers(
        lab,
        &[
            (Host::Director, ha(150, preempt)),
            (Host::ExtraDirector(2), ha(100, preempt)),
        ],
    );
    group.run_until_elected("director (150) elected", 0);
    group
}

/// Whether `router` is in `state`, and the test has handled the event that says so.
fn is(state: VrrpState) -> impl Fn(&Router) -> bool {
    move |router| router.role() == Some(state) && router.state() == state
}

/// `index` is master and holds the VIP; every other running router is backup.
fn elected(group: &Group, index: usize) -> bool {
    group.routers.iter().enumerate().all(|(i, router)| {
        router.vrrp.is_none()
            || if i == index {
                is(VrrpState::Master)(router)
            } else {
                is(VrrpState::Backup)(router)
            }
    })
}

/// The master's address as a router's `status` has it.
fn master_address(status: &VrrpStatus) -> Option<String> {
    status.master_address.map(|a| a.to_string())
}

/// Panics unless `status` is of a router following the master `director<master>` of
/// `priority`, at [`INTERVAL`], having received at least `adverts` advertisements, none invalid
/// and every one with its own address list.
#[track_caller]
fn assert_follows(status: &VrrpStatus, master: usize, priority: u8, adverts: u64) {
    assert_eq!(master_address(status), Some(director_ip(master)));
    assert_eq!(status.master_priority, Some(priority));
    assert_eq!(status.master_advert_interval, INTERVAL);
    assert!(status.counters.adverts_received >= adverts, "{status:?}");
    assert_eq!(status.counters.invalid(), 0, "{status:?}");
    assert_eq!(status.counters.address_list_mismatch, 0, "{status:?}");
}

/// Panics unless the VIP is on `holder`'s `eth0` and not on `other`'s.
#[track_caller]
fn assert_vip_on(lab: &Lab, holder: Host, other: Host) {
    assert!(lab.has_address(holder, VIP), "the VIP on {holder}");
    assert!(!lab.has_address(other, VIP), "no VIP on {other}");
}

#[test]
fn two_routers_elect_the_higher_priority() {
    require_root!();
    let lab = lab(2);
    let start = Instant::now();
    let mut group = start_routers(
        &lab,
        &[
            (Host::ExtraDirector(2), ha(100, true)),
            (Host::Director, ha(150, true)),
        ],
    );
    let took = group.run_until_elected("director (150) elected", 1);
    println!(
        "election took {took:?} (master-down interval of priority 150: {:?})",
        master_down_interval(150, INTERVAL)
    );
    assert!(took < master_down_interval(100, INTERVAL) + SLACK);
    assert!(start.elapsed() < WITHIN);
    // Let it run: nothing changes, adverts flow, nothing is discarded.
    group.assert_steady(INTERVAL * 10);
    let backup = group.routers[0].status();
    let master = group.routers[1].status();
    assert_follows(&backup, 1, 150, 8);
    assert_eq!(
        backup.master_down_interval,
        master_down_interval(100, INTERVAL)
    );
    assert!(master.counters.adverts_sent >= 10, "{master:?}");
    assert_eq!(master.counters.send_errors, 0, "{master:?}");
    assert_vip_on(&lab, Host::Director, Host::ExtraDirector(2));
    assert!(
        group.routers[0]
            .seen
            .iter()
            .any(|(_, e)| matches!(e, HaEvent::PeerSeen { priority: 150, .. })),
        "the backup reports the master as a peer"
    );
}

#[test]
fn backup_takes_over_when_the_master_link_goes_down_and_the_primary_preempts_back() {
    require_root!();
    let lab = lab(2);
    let mut group = primary_and_backup(&lab, true);

    let down = Instant::now();
    lab.set_link(Host::Director, false);
    group.run_until_state("director2 takes over", WITHIN, 1, VrrpState::Master);
    let takeover = group.routers[1].master_after(down);
    let bound = master_down_interval(100, INTERVAL);
    println!("link down: director2 master after {takeover:?} (master-down interval {bound:?})");
    assert!(takeover < bound + SLACK, "took {takeover:?}");
    group.run_until_state(
        "director at fault",
        Duration::from_secs(1),
        0,
        VrrpState::Fault,
    );
    assert_vip_on(&lab, Host::ExtraDirector(2), Host::Director);

    let up = Instant::now();
    lab.set_link(Host::Director, true);
    group.run_until_elected("director (150) preempts back", 0);
    let back = group.routers[0].master_after(up);
    let bound = control::ha::vrrp::LINK_CHECK_INTERVAL + master_down_interval(150, INTERVAL);
    println!("link up: director master again after {back:?} (link check + master-down interval {bound:?})");
    assert!(back < bound + SLACK, "took {back:?}");
    assert_vip_on(&lab, Host::Director, Host::ExtraDirector(2));
    group.assert_steady(INTERVAL * 5);
}

#[test]
fn without_preemption_the_returning_primary_stays_backup() {
    require_root!();
    let lab = lab(2);
    let mut group = primary_and_backup(&lab, false);
    lab.set_link(Host::Director, false);
    group.run_until_state("director2 takes over", WITHIN, 1, VrrpState::Master);
    lab.set_link(Host::Director, true);
    group.run_until_state(
        "director back as backup",
        Duration::from_secs(2),
        0,
        VrrpState::Backup,
    );
    // Several master-down intervals: the lower master keeps the VIP.
    group.assert_steady(master_down_interval(150, INTERVAL) * 4);
    assert!(elected(&group, 1), "{}", group.describe());
    let primary = group.routers[0].status();
    assert_eq!(master_address(&primary), Some(director_ip(2)));
    assert_eq!(primary.master_priority, Some(100));
}

#[test]
fn priority_zero_on_shutdown_hands_over_within_the_skew_time() {
    require_root!();
    let lab = lab(2);
    // One-second advertisements make the difference plain: a silent master is noticed after
    // 3.2 s, a resigning one after the backup's skew time, 0.22 s.
    let slow = |priority| HaConfig {
        advert_interval: Duration::from_secs(1),
        ..ha(priority, true)
    };
    let mut group = start_routers(
        &lab,
        &[
            (Host::Director, slow(250)),
            (Host::ExtraDirector(2), slow(200)),
        ],
    );
    group.run_until("director (250) elected", Duration::from_secs(10), |g| {
        elected(g, 0)
    });
    // A backup that has heard the master follows its interval.
    group.run_until("director2 heard the master", Duration::from_secs(3), |g| {
        g.routers[1].status().master_priority == Some(250)
    });
    let stop = Instant::now();
    let last = group.routers[0].shutdown();
    assert_eq!(last.state, VrrpState::Initialize);
    assert_eq!(last.counters.priority_zero_sent, 1, "{last:?}");
    group.run_until_state("director2 takes over", WITHIN, 1, VrrpState::Master);
    let handover = group.routers[1].master_after(stop);
    let down = master_down_interval(200, Duration::from_secs(1));
    let skew = skew_time(200, Duration::from_secs(1));
    println!("priority 0: director2 master after {handover:?} (skew {skew:?}, master-down interval {down:?})");
    assert!(handover < skew + SLACK, "took {handover:?}");
    assert!(handover < down / 2);
    assert_eq!(group.routers[1].status().counters.priority_zero_received, 1);
}

#[test]
fn updating_the_vips_does_not_change_the_master() {
    require_root!();
    let lab = lab(2);
    let mut group = primary_and_backup(&lab, true);
    let before = group.transition_counts();
    let more = [vip(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20))];
    // The master reloads first; the backup hears the longer list for a while, then catches up.
    group.routers[0].vrrp_mut().update_vips(&more).unwrap();
    group.assert_steady(master_down_interval(100, INTERVAL) * 2);
    group.routers[1].vrrp_mut().update_vips(&more).unwrap();
    // Priorities and intervals change too, without crossing: no takeover.
    let reload = |priority| HaConfig {
        advert_interval: Duration::from_millis(200),
        ..ha(priority, true)
    };
    group.routers[1]
        .vrrp_mut()
        .update(&reload(140), &more)
        .unwrap();
    group.routers[0]
        .vrrp_mut()
        .update(&reload(160), &more)
        .unwrap();
    group.assert_steady(master_down_interval(100, INTERVAL) * 3);
    assert!(elected(&group, 0), "{}", group.describe());
    assert_eq!(before, group.transition_counts());
    let backup = group.routers[1].status();
    assert!(backup.counters.address_list_mismatch > 0, "{backup:?}");
    assert_eq!(backup.vips, more);
    assert_eq!(backup.master_priority, Some(160));
    assert_eq!(backup.master_advert_interval, Duration::from_millis(200));
    // A different VRID is another router: refused, nothing changes.
    let other = HaConfig {
        vrid: 52,
        ..ha(150, true)
    };
    let error = group.routers[0]
        .vrrp_mut()
        .update(&other, &more)
        .unwrap_err();
    assert!(
        error.to_string().contains("ha.vrid changed from 51 to 52"),
        "{error}"
    );
}

#[test]
fn three_routers_of_ours_fail_over_in_priority_order() {
    require_root!();
    let lab = lab(3);
    let mut group = start_routers(
        &lab,
        &[
            (Host::Director, ha(200, true)),
            (Host::ExtraDirector(2), ha(150, true)),
            (Host::ExtraDirector(3), ha(100, true)),
        ],
    );
    group.run_until_elected("director (200) elected", 0);
    lab.set_link(Host::Director, false);
    let down = Instant::now();
    // director3 learns the new master from its first advertisement, a moment after director2
    // turns master (seen in CI: checked in between, it still named 200).
    group.run_until("director2 (150) takes over", WITHIN, |g| {
        is(VrrpState::Master)(&g.routers[1])
            && is(VrrpState::Backup)(&g.routers[2])
            && g.routers[2].status().master_priority == Some(150)
    });
    println!(
        "three routers: director2 master after {:?}",
        group.routers[1].master_after(down)
    );
    let stop = Instant::now();
    group.routers[1].shutdown();
    group.run_until_state("director3 (100) takes over", WITHIN, 2, VrrpState::Master);
    println!(
        "three routers: director3 master after {:?} of director2's priority 0",
        group.routers[2].master_after(stop)
    );
    lab.set_link(Host::Director, true);
    group.run_until_elected("director (200) preempts", 0);
    assert_vip_on(&lab, Host::Director, Host::ExtraDirector(3));
}

#[test]
fn the_vip_follows_the_master_under_client_load() {
    require_root!();
    let lab = lab(2);
    // Each director answers on the VIP itself once it holds it, and names itself.
    let _http = [
        lab.start_http_on(Host::Director),
        lab.start_http_on(Host::ExtraDirector(2)),
    ];
    let mut group = primary_and_backup(&lab, true);
    let options = LoadOptions {
        timeout: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    let mut load = lab.start_load(&vip_url(), &options);
    let served_by = |results: &[anyhow::Result<director_lab::HttpResponse>], name: &str| {
        results
            .iter()
            .flatten()
            .filter(|response| response.server == name)
            .count()
    };
    load.wait_until("director serves the VIP", WITHIN, |r| {
        served_by(r, "director") >= 5
    })
    .unwrap();

    let down = Instant::now();
    lab.set_link(Host::Director, false);
    group.run_until("director2 serves the VIP", WITHIN, |_| {
        served_by(&load.results(), "director2") >= 1
    });
    let gap = down.elapsed();
    let takeover = group.routers[1].master_after(down);
    println!(
        "under load: director2 master after {takeover:?}, answering the client after {gap:?} \
         (master-down interval {:?})",
        master_down_interval(100, INTERVAL)
    );
    assert!(gap < Duration::from_secs(1), "{gap:?}");

    let up = Instant::now();
    lab.set_link(Host::Director, true);
    // The returning primary preempts and its gratuitous ARPs bring the client back.
    let before = served_by(&load.results(), "director");
    group.run_until("director serves the VIP again", WITHIN, |_| {
        served_by(&load.results(), "director") > before
    });
    let back = up.elapsed();
    println!("under load: director answered again {back:?} after its link came back");
    let results = load.stop();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "under load: {} requests, {failed} failed during the two handovers",
        results.len()
    );
}

// ---------------------------------------------------------------------------------------------
// keepalived.

fn keepalived(lab: &Lab, host: Host, priority: u8, preempt: bool) -> Keepalived {
    lab.start_keepalived(
        host,
        &KeepalivedOptions {
            preempt,
            ..KeepalivedOptions::new(priority)
        },
    )
}

/// Waits at most `timeout` until keepalived `peer` is in `state`; returns how long it took.
fn keepalived_reaches(
    peer: &mut Keepalived,
    state: KeepalivedState,
    timeout: Duration,
) -> Duration {
    peer.wait_for_state(state, timeout).unwrap()
}

/// Panics unless keepalived `peer` has been in exactly `states`, in order.
#[track_caller]
fn assert_keepalived_states(peer: &Keepalived, states: &[KeepalivedState]) {
    assert_eq!(peer.states(), states, "{}", peer.log());
}

/// Our config of `priority` advertising by unicast to `director<peer>` only.
fn unicast_to(peer: usize, priority: u8) -> HaConfig {
    HaConfig {
        unicast_peers: vec![director_ip(peer).parse().unwrap()],
        ..ha(priority, true)
    }
}

#[test]
fn ours_master_keepalived_backup_then_keepalived_takes_over() {
    require_root!();
    let lab = lab(2);
    let mut group = start_routers(&lab, &[(Host::Director, ha(150, true))]);
    let mut peer = keepalived(&lab, Host::ExtraDirector(2), 100, true);
    group.run_until_elected("ours master", 0);
    // keepalived hears us and stays backup (it would drop our adverts, and take over, if it
    // disliked anything in them: version, checksum, addresses, interval).
    group.assert_steady(master_down_interval(100, INTERVAL) * 5);
    assert_keepalived_states(&peer, &[KeepalivedState::Backup]);
    let ours = group.routers[0].status();
    assert!(ours.counters.adverts_sent > 10);
    assert_eq!(ours.counters.invalid(), 0, "{ours:?}");

    let stop = Instant::now();
    group.routers[0].shutdown();
    let handover = keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    let elapsed = stop.elapsed();
    println!(
        "ours resigned: keepalived master after {handover:?} ({elapsed:?} from the shutdown call; \
         skew {:?}, master-down interval {:?})",
        skew_time(100, INTERVAL),
        master_down_interval(100, INTERVAL)
    );
    // Faster than a silent master would be noticed: keepalived acted on the priority 0.
    assert!(
        elapsed < master_down_interval(100, INTERVAL),
        "took {elapsed:?}"
    );
}

#[test]
fn keepalived_master_ours_backup_then_ours_takes_over() {
    require_root!();
    let lab = lab(2);
    let mut peer = keepalived(&lab, Host::ExtraDirector(2), 150, true);
    keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    let mut group = start_routers(&lab, &[(Host::Director, ha(100, true))]);
    let changes = group.run_for(master_down_interval(100, INTERVAL) * 5);
    assert_eq!(
        changes,
        1,
        "only Initialize -> Backup: {}",
        group.describe()
    );
    let ours = group.routers[0].status();
    assert_eq!(ours.state, VrrpState::Backup);
    assert_follows(&ours, 2, 150, 10);
    assert_eq!(peer.state(), Some(KeepalivedState::Master));

    // A clean stop: keepalived resigns with priority 0.
    let stop = Instant::now();
    peer.terminate();
    group.run_until_state("ours takes over", WITHIN, 0, VrrpState::Master);
    peer.wait_exit().unwrap();
    let handover = group.routers[0].master_after(stop);
    println!(
        "keepalived stopped: ours master after {handover:?} (skew {:?}, master-down interval {:?})",
        skew_time(100, INTERVAL),
        master_down_interval(100, INTERVAL)
    );
    assert!(handover < master_down_interval(100, INTERVAL) + SLACK);
    assert_eq!(group.routers[0].status().counters.priority_zero_received, 1);

    // keepalived comes back with the higher priority and preempts us.
    let mut peer = keepalived(&lab, Host::ExtraDirector(2), 150, true);
    let back = Instant::now();
    group.run_until_state("ours yields to keepalived", WITHIN, 0, VrrpState::Backup);
    keepalived_reaches(&mut peer, KeepalivedState::Master, Duration::from_secs(2));
    println!(
        "keepalived (150) back: ours backup after {:?}",
        back.elapsed()
    );

    // A crash (no priority 0): the master-down interval.
    let crash = Instant::now();
    peer.kill();
    group.run_until_state(
        "ours takes over from a crashed keepalived",
        WITHIN,
        0,
        VrrpState::Master,
    );
    let handover = group.routers[0].master_after(crash);
    println!("keepalived killed: ours master after {handover:?}");
    assert!(handover < master_down_interval(100, INTERVAL) + SLACK);
}

#[test]
fn keepalived_backup_without_preemption_keeps_our_lower_master() {
    require_root!();
    let lab = lab(2);
    let mut group = start_routers(&lab, &[(Host::Director, ha(100, false))]);
    group.run_until_elected("ours master", 0);
    let peer = keepalived(&lab, Host::ExtraDirector(2), 150, false);
    group.assert_steady(master_down_interval(150, INTERVAL) * 5);
    assert_keepalived_states(&peer, &[KeepalivedState::Backup]);
    assert!(elected(&group, 0));
}

#[test]
fn three_routers_two_ours_and_keepalived() {
    require_root!();
    let lab = lab(3);
    let mut group = start_routers(
        &lab,
        &[
            (Host::Director, ha(200, true)),
            (Host::ExtraDirector(3), ha(50, true)),
        ],
    );
    let mut peer = keepalived(&lab, Host::ExtraDirector(2), 150, true);
    group.run_until_elected("director (200) elected", 0);
    group.assert_steady(INTERVAL * 10);
    assert_keepalived_states(&peer, &[KeepalivedState::Backup]);

    // The master's link fails: keepalived (150) outranks our other router (100).
    let down = Instant::now();
    lab.set_link(Host::Director, false);
    let took = keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    println!("three routers: keepalived master {took:?} after the master's link went down");
    assert!(down.elapsed() < master_down_interval(150, INTERVAL) + SLACK);
    group.run_until(
        "director3 follows keepalived",
        Duration::from_secs(2),
        |g| {
            g.routers[1].status().master_priority == Some(150)
                && is(VrrpState::Backup)(&g.routers[1])
                && is(VrrpState::Fault)(&g.routers[0])
        },
    );
    // keepalived's skew (150) is 40 ms shorter than director3's (50): director3 should never
    // have taken over, even for a moment.
    println!(
        "three routers: director3 took over meanwhile: {}",
        group.routers[1].last(HaEvent::BecameMaster).is_some()
    );
    group.assert_steady(INTERVAL * 10);

    // It returns and preempts keepalived.
    lab.set_link(Host::Director, true);
    group.run_until_elected("director (200) preempts", 0);
    keepalived_reaches(&mut peer, KeepalivedState::Backup, Duration::from_secs(2));
    assert_keepalived_states(
        &peer,
        &[
            KeepalivedState::Backup,
            KeepalivedState::Master,
            KeepalivedState::Backup,
        ],
    );
}

#[test]
fn unicast_advertisements_interoperate_with_keepalived() {
    require_root!();
    let lab = lab(2);
    let mut group = start_routers(&lab, &[(Host::Director, unicast_to(2, 150))]);
    let mut peer = lab.start_keepalived(
        Host::ExtraDirector(2),
        &KeepalivedOptions {
            unicast_peers: vec![director_ip(1)],
            ..KeepalivedOptions::new(100)
        },
    );
    group.run_until_elected("ours master", 0);
    group.assert_steady(master_down_interval(100, INTERVAL) * 5);
    assert_keepalived_states(&peer, &[KeepalivedState::Backup]);
    let stop = Instant::now();
    group.routers[0].shutdown();
    keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    println!(
        "unicast: keepalived master {:?} after ours resigned",
        stop.elapsed()
    );
    // And the other way round: keepalived's unicast adverts reach a router of ours.
    let mut group2 = start_routers(&lab, &[(Host::Director, unicast_to(2, 100))]);
    assert_eq!(group2.run_for(master_down_interval(100, INTERVAL) * 3), 1);
    let status = group2.routers[0].status();
    assert_eq!(status.state, VrrpState::Backup, "{status:?}");
    assert_eq!(master_address(&status), Some(director_ip(2)));
    assert_eq!(status.counters.invalid(), 0, "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// IPv6: VRRPv3 over IPv6 (RFC 5798 5.1.2) for an IPv6 VIP, announced with unsolicited neighbour
// advertisements (RFC 4861 7.2.6).

/// The IPv6 VIP (documentation prefix).
const VIP6: &str = "2001:db8::10";

fn vip6() -> IpAddr {
    VIP6.parse().unwrap()
}

/// `host`'s own IPv6 address on the lab segment: 2001:db8::2 for the client, ::3 for the
/// director, ::251 and ::252 for directors 2 and 3 (as their IPv4 addresses end).
fn ipv6_address(host: Host) -> String {
    let ipv4: Ipv4Addr = host.address().unwrap().parse().unwrap();
    format!("2001:db8::{}", ipv4.octets()[3])
}

/// Turns IPv6 on in `host` (every lab namespace starts with it off) without DAD, gives `eth0`
/// its [`ipv6_address`]/64, and waits until `eth0`'s link-local address is usable (the VRRP
/// source address).
fn enable_ipv6(lab: &Lab, host: Host) {
    lab.exec_ok(
        host,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.eth0.accept_dad=0",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.eth0.disable_ipv6=0",
        ],
    );
    let address = format!("{}/64", ipv6_address(host));
    lab.exec_ok(
        host,
        &["ip", "-6", "addr", "add", &address, "dev", "eth0", "nodad"],
    );
    director_lab::poll_until(
        &format!("{host}'s link-local address"),
        WITHIN,
        STEP,
        || {
            let shown = lab.exec_ok(
                host,
                &[
                    "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
                ],
            );
            if shown.contains("fe80::") && !shown.contains("tentative") {
                Ok(())
            } else {
                Err(shown)
            }
        },
    )
    .unwrap();
}

/// An IPv6 DR lab: `directors` directors, a client, IPv6 on in all of them.
fn lab6(directors: usize) -> SerialLab {
    let lab = lab(directors);
    for host in std::iter::once(Host::Client).chain(lab.director_hosts()) {
        enable_ipv6(&lab, host);
    }
    lab
}

/// Whether `address` is configured on `host`'s `eth0` ([`Lab::has_address`] looks at IPv4).
fn has_address6(lab: &Lab, host: Host, address: &str) -> bool {
    let shown = lab.exec_ok(host, &["ip", "-o", "-6", "addr", "show", "dev", "eth0"]);
    shown.contains(&format!(" {address}/"))
}

/// `host`'s `eth0` MAC.
fn mac_of(lab: &Lab, host: Host) -> String {
    let shown = lab.exec_ok(host, &["ip", "-o", "link", "show", "dev", "eth0"]);
    let mut words = shown.split_whitespace();
    words.find(|word| *word == "link/ether");
    words.next().unwrap().to_owned()
}

/// `host`'s `eth0` link-local address.
fn link_local_of(lab: &Lab, host: Host) -> IpAddr {
    let shown = lab.exec_ok(
        host,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ],
    );
    let mut words = shown.split_whitespace();
    words.find(|word| *word == "inet6");
    let with_prefix = words.next().unwrap();
    with_prefix.split('/').next().unwrap().parse().unwrap()
}

/// The MAC `host`'s neighbour cache holds for `address` on `eth0`, if any.
fn neighbour_mac(lab: &Lab, host: Host, address: &str) -> Option<String> {
    let shown = lab.exec_ok(host, &["ip", "-6", "neigh", "show", address, "dev", "eth0"]);
    let mut words = shown.split_whitespace();
    words.find(|word| *word == "lladdr");
    words.next().map(str::to_owned)
}

/// Panics unless `status` is of an IPv6 router following `master` (a link-local address) of
/// `priority`, with nothing discarded and the same address list.
#[track_caller]
fn assert_follows6(status: &VrrpStatus, master: IpAddr, priority: u8) {
    assert_eq!(status.master_address, Some(master), "{status:?}");
    assert_eq!(status.master_priority, Some(priority), "{status:?}");
    assert!(status.counters.adverts_received >= 5, "{status:?}");
    assert_eq!(status.counters.invalid(), 0, "{status:?}");
    assert_eq!(status.counters.address_list_mismatch, 0, "{status:?}");
}

#[test]
fn ipv6_vip_election_and_failover_announced_with_neighbour_advertisements() {
    require_root!();
    let lab = lab6(2);
    let mut group = Group {
        routers: vec![
            Router::start(&lab, Host::Director, &ha(150, true), &[vip6()]),
            Router::start(&lab, Host::ExtraDirector(2), &ha(100, true), &[vip6()]),
        ],
    };
    let primary_link_local = link_local_of(&lab, Host::Director);
    assert_eq!(
        group.routers[0].vrrp().primary_address(),
        primary_link_local
    );
    group.run_until_elected("director (150) elected over IPv6", 0);
    group.assert_steady(INTERVAL * 10);
    let backup = group.routers[1].status();
    assert!(backup.primary_address.is_ipv6(), "{backup:?}");
    assert_follows6(&backup, primary_link_local, 150);
    assert_eq!(group.routers[0].status().counters.send_errors, 0);
    assert!(
        has_address6(&lab, Host::Director, VIP6),
        "the VIP on the master"
    );
    assert!(!has_address6(&lab, Host::ExtraDirector(2), VIP6));

    // The client learns the VIP at the master's MAC: a connection attempt (refused, nothing
    // listens) resolves it.
    let _ = lab.tcp_connects(Host::Client, VIP6, 80);
    let primary_mac = mac_of(&lab, Host::Director);
    assert_eq!(
        neighbour_mac(&lab, Host::Client, VIP6),
        Some(primary_mac.clone())
    );

    // The master's link fails: the backup takes over, and only its unsolicited neighbour
    // advertisement can move the client's entry (the client sends nothing meanwhile).
    let down = Instant::now();
    lab.set_link(Host::Director, false);
    group.run_until_state("director2 takes over", WITHIN, 1, VrrpState::Master);
    let takeover = group.routers[1].master_after(down);
    println!(
        "IPv6: director2 master after {takeover:?} (master-down interval {:?})",
        master_down_interval(100, INTERVAL)
    );
    assert!(takeover < master_down_interval(100, INTERVAL) + SLACK);
    group.run_until_state(
        "director at fault",
        Duration::from_secs(1),
        0,
        VrrpState::Fault,
    );
    let backup_mac = mac_of(&lab, Host::ExtraDirector(2));
    let moved =
        director_lab::poll_until(
            "the client's entry moves",
            WITHIN,
            STEP,
            || match neighbour_mac(&lab, Host::Client, VIP6) {
                Some(mac) if mac == backup_mac => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    moved.unwrap();
    println!(
        "IPv6: the client's neighbour entry moved {:?} after the link went down",
        down.elapsed()
    );
    let announcer = group.routers[1].status();
    assert!(
        announcer.counters.neighbour_advertisements_sent >= 1,
        "{announcer:?}"
    );
    assert_eq!(announcer.counters.gratuitous_arps_sent, 0, "{announcer:?}");
    assert!(has_address6(&lab, Host::ExtraDirector(2), VIP6));

    // The primary returns and preempts; its announcement moves the entry back.
    lab.set_link(Host::Director, true);
    group.run_until_elected("director (150) preempts over IPv6", 0);
    director_lab::poll_until(
        "the client's entry moves back",
        WITHIN,
        STEP,
        || match neighbour_mac(&lab, Host::Client, VIP6) {
            Some(mac) if mac == primary_mac => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap();
}

#[test]
fn dual_stack_vips_fail_over_together() {
    require_root!();
    let lab = lab6(2);
    let both = [vip(), vip6()];
    let mut group = Group {
        routers: vec![
            Router::start(&lab, Host::Director, &ha(150, true), &both),
            Router::start(&lab, Host::ExtraDirector(2), &ha(100, true), &both),
        ],
    };
    for router in &group.routers {
        // Both routers' statuses are there to read at once, before their threads report.
        assert_eq!(router.vrrp().statuses().len(), 2);
    }
    group.run_until_elected("director (150) elected in both families", 0);
    group.assert_steady(INTERVAL * 10);
    for router in &group.routers {
        let statuses = router.vrrp().statuses();
        assert_eq!(statuses.len(), 2, "a router per family: {statuses:?}");
        assert!(statuses[0].primary_address.is_ipv4() && statuses[1].primary_address.is_ipv6());
    }
    let backup = group.routers[1].vrrp().statuses();
    assert_follows(&backup[0], 1, 150, 8);
    assert_follows6(&backup[1], link_local_of(&lab, Host::Director), 150);
    assert_vip_on(&lab, Host::Director, Host::ExtraDirector(2));
    assert!(has_address6(&lab, Host::Director, VIP6));

    let stop = Instant::now();
    group.routers[0].shutdown();
    group.run_until_state("director2 takes over both", WITHIN, 1, VrrpState::Master);
    println!(
        "dual stack: director2 master after {:?}",
        group.routers[1].master_after(stop)
    );
    let statuses = group.routers[1].vrrp().statuses();
    assert!(
        statuses.iter().all(|s| s.state == VrrpState::Master),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.counters.priority_zero_received == 1),
        "{statuses:?}"
    );
    assert!(
        lab.has_address(Host::ExtraDirector(2), VIP)
            && has_address6(&lab, Host::ExtraDirector(2), VIP6)
    );
    // One BecameMaster for both families.
    let masters = group.routers[1]
        .seen
        .iter()
        .filter(|(_, e)| *e == HaEvent::BecameMaster)
        .count();
    assert_eq!(masters, 1, "{:?}", group.routers[1].seen);
}

fn keepalived6(lab: &Lab, host: Host, priority: u8) -> Keepalived {
    lab.start_keepalived(
        host,
        &KeepalivedOptions {
            vips: vec![VIP6.to_owned()],
            ..KeepalivedOptions::new(priority)
        },
    )
}

#[test]
fn ipv6_ours_master_keepalived_backup_then_keepalived_takes_over() {
    require_root!();
    let lab = lab6(2);
    let mut group = Group {
        routers: vec![Router::start(
            &lab,
            Host::Director,
            &ha(150, true),
            &[vip6()],
        )],
    };
    let mut peer = keepalived6(&lab, Host::ExtraDirector(2), 100);
    group.run_until_elected("ours master over IPv6", 0);
    // keepalived would drop our advertisements, and take over, if it disliked anything in
    // them: hop limit, checksum, the address list.
    group.assert_steady(master_down_interval(100, INTERVAL) * 5);
    assert_keepalived_states(&peer, &[KeepalivedState::Backup]);
    let ours = group.routers[0].status();
    assert!(ours.counters.adverts_sent > 10, "{ours:?}");
    assert_eq!(ours.counters.send_errors, 0, "{ours:?}");

    let stop = Instant::now();
    group.routers[0].shutdown();
    keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    let elapsed = stop.elapsed();
    println!("IPv6: ours resigned, keepalived master after {elapsed:?}");
    assert!(
        elapsed < master_down_interval(100, INTERVAL),
        "took {elapsed:?}"
    );
}

#[test]
fn ipv6_keepalived_master_ours_backup_then_ours_takes_over() {
    require_root!();
    let lab = lab6(2);
    let mut peer = keepalived6(&lab, Host::ExtraDirector(2), 150);
    keepalived_reaches(&mut peer, KeepalivedState::Master, WITHIN);
    let mut group = Group {
        routers: vec![Router::start(
            &lab,
            Host::Director,
            &ha(100, true),
            &[vip6()],
        )],
    };
    let changes = group.run_for(master_down_interval(100, INTERVAL) * 5);
    assert_eq!(
        changes,
        1,
        "only Initialize -> Backup: {}",
        group.describe()
    );
    let ours = group.routers[0].status();
    assert_eq!(ours.state, VrrpState::Backup);
    assert_follows6(&ours, link_local_of(&lab, Host::ExtraDirector(2)), 150);
    assert_eq!(ours.master_advert_interval, INTERVAL);

    let stop = Instant::now();
    peer.terminate();
    group.run_until_state("ours takes over", WITHIN, 0, VrrpState::Master);
    peer.wait_exit().unwrap();
    let handover = group.routers[0].master_after(stop);
    println!("IPv6: keepalived stopped, ours master after {handover:?}");
    assert!(handover < master_down_interval(100, INTERVAL) + SLACK);
    assert_eq!(group.routers[0].status().counters.priority_zero_received, 1);
    assert!(has_address6(&lab, Host::Director, VIP6));
}

#[test]
fn ipv6_router_needs_a_link_local_address_and_multicast() {
    require_root!();
    let lab = lab(1);
    // IPv6 is off in the lab's namespaces: no link-local address to advertise from.
    let error = lab.in_namespace(Host::Director, || {
        Vrrp::start(&ha(100, true), "eth0", &[vip6()]).unwrap_err()
    });
    assert!(
        matches!(
            error,
            control::ha::vrrp::VrrpError::NoLinkLocalAddress { .. }
        ),
        "{error}"
    );
    enable_ipv6(&lab, Host::Director);
    // unicast_peers are IPv4: the IPv6 router cannot use them.
    let error = lab.in_namespace(Host::Director, || {
        Vrrp::start(&unicast_to(2, 100), "eth0", &[vip(), vip6()]).unwrap_err()
    });
    assert!(
        matches!(error, control::ha::vrrp::VrrpError::UnicastIpv6),
        "{error}"
    );
}

#[test]
fn a_reload_adding_and_removing_ipv6_vips_starts_and_stops_the_ipv6_router() {
    require_root!();
    let lab = lab6(2);
    let mut group = primary_and_backup(&lab, true);
    assert_eq!(group.routers[0].vrrp().statuses().len(), 1);
    // Both reload with an IPv6 VIP (from the test's thread: the routers' sockets are in their
    // namespaces already, but a new router opens its own where update is called).
    let both = [vip(), vip6()];
    for index in 0..2 {
        let host = group.routers[index].host;
        let router = &mut group.routers[index];
        router.vips = both.to_vec();
        let vrrp = router.vrrp.as_mut().unwrap();
        lab.in_namespace(host, || vrrp.update_vips(&both).unwrap());
    }
    group.run_until("director (150) elected in both families", WITHIN, |g| {
        let in_state = |index: usize, state| {
            let statuses = g.routers[index].vrrp().statuses();
            statuses.len() == 2 && statuses.iter().all(|status| status.state == state)
        };
        in_state(0, VrrpState::Master) && in_state(1, VrrpState::Backup) && elected(g, 0)
    });
    group.assert_steady(INTERVAL * 10);
    let statuses = group.routers[1].vrrp().statuses();
    assert_follows6(&statuses[1], link_local_of(&lab, Host::Director), 150);
    assert!(has_address6(&lab, Host::Director, VIP6));
    // Dropping the IPv6 VIPs stops the IPv6 routers; the IPv4 election stands.
    let before = group.transition_counts();
    for router in &mut group.routers {
        router.vrrp_mut().update_vips(&[vip()]).unwrap();
    }
    group.assert_steady(master_down_interval(100, INTERVAL) * 2);
    assert!(elected(&group, 0), "{}", group.describe());
    assert_eq!(group.routers[0].vrrp().statuses().len(), 1);
    assert_eq!(before, group.transition_counts());
}
