//! The HA actions thread: under `[ha]`, follows VRRP's transitions on a path of its own. On
//! [`HaEvent::BecameMaster`] it switches state sync to master, adds the VIPs and the NAT
//! gateway addresses, steers the services' frames to the workers and has the VRRP threads
//! announce the VIPs; on [`HaEvent::BecameBackup`] or [`HaEvent::Fault`] it undoes that. It
//! measures how long the takeover took from the VRRP threads' decision to the VIPs served
//! ([`TakeoverLatency`], in the stats as `ha.takeover_latency_us`).
//!
//! Why a thread: the main loop also reloads, executes control commands and waits for
//! real-server MACs and for workers to adopt tables, for up to seconds. A takeover must not wait
//! behind any of that, or the VIP is blackholed while VRRP already advertises as master. This
//! thread waits only on its channels and does only fast local work (address changes on its own
//! netlink socket, BPF map writes, queueing announcements), so a transition is applied within
//! milliseconds of the decision.
//!
//! Who owns what, under `[ha]`:
//! - this thread: the VIPs and NAT gateway addresses (added, removed, retried every
//!   [`RETRY_INTERVAL`]; only those it added or took charge of are removed), the `serving` flag
//!   and state sync's role. Start-up hands it the addresses an earlier run left; shutdown
//!   stops it and takes back what it holds to release them ([`HaActions::stop`]).
//! - the main loop: which services the client side's classifier map holds (a reload adds and
//!   withdraws them), and what the thread should hold when master: after each reload it
//!   publishes a new [`HaPlan`], an immutable snapshot (VIPs, gateway addresses, announcer).
//! - both write the service map's steering, under one lock ([`Steering`]) held only for the map
//!   writes: the thread switches every listed service on or off and sets `serving` under it,
//!   the main loop adds a service with the `serving` it reads under it, so a service a reload
//!   adds during a takeover is steered as the takeover decided.
//!
//! It must not decide who is master (the VRRP threads do), touch tables or neighbours, or wait
//! on the main loop.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tracing::{error, info, warn};

use super::addresses::{sync_gateways, sync_vips};
use super::state::{Shared, TakeoverLatency};
use super::steering::Steering;
use crate::ha::sync::{Role, SyncDaemon};
use crate::ha::vrrp::{HaEvent, VipAnnouncer, VrrpStatusSource};
use crate::netlink::Netlink;

/// How often the thread retries address changes that failed.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the thread holds while master, as the main loop last published it.
#[derive(Clone, Debug, Default)]
pub(super) struct HaPlan {
    /// Every service's VIP.
    pub(super) vips: BTreeSet<IpAddr>,
    /// The NAT real servers' gateway addresses on the server side, with their prefixes.
    pub(super) gateways: BTreeSet<(IpAddr, u8)>,
    /// Reaches the VRRP threads running now.
    pub(super) announcer: VipAnnouncer,
}

/// The addresses one owner holds: VIPs on the client side, NAT gateways on the server side.
#[derive(Debug, Default)]
pub(super) struct HeldAddresses {
    pub(super) vips: BTreeSet<IpAddr>,
    pub(super) gateways: BTreeSet<(IpAddr, u8)>,
    /// Addresses found without the director's mark: the operator's, logged once, never held.
    pub(super) operators: BTreeSet<IpAddr>,
}

/// What the thread works with besides its channels.
pub(super) struct Context {
    /// The interfaces and their classifiers.
    pub(super) shared: Arc<Shared>,
    pub(super) steering: Arc<Steering>,
    pub(super) serving: Arc<AtomicBool>,
    pub(super) sync: Option<Arc<SyncDaemon>>,
    /// When VRRP decided, to measure the latency from.
    pub(super) status: VrrpStatusSource,
    pub(super) latency: Arc<TakeoverLatency>,
}

/// The main loop's handle on the thread.
pub(super) struct HaActions {
    plans: Option<Sender<HaPlan>>,
    thread: Option<JoinHandle<HeldAddresses>>,
}

impl HaActions {
    /// Starts the thread, with its own netlink socket, following `events` (the VRRP
    /// handle's) with `plan` and the addresses an earlier run left (`held`). It reconciles the
    /// addresses at once: not serving, it removes those.
    pub(super) fn start(
        context: Context,
        events: Receiver<HaEvent>,
        plan: HaPlan,
        held: &mut HeldAddresses,
    ) -> anyhow::Result<Self> {
        let netlink = Netlink::open()?;
        let held = std::mem::take(held);
        let (plans, plan_receiver) = crossbeam_channel::unbounded();
        let worker = ActionThread {
            context,
            netlink,
            events,
            plans: plan_receiver,
            plan,
            held,
        };
        let thread = std::thread::Builder::new()
            .name("ha-actions".to_owned())
            .spawn(move || worker.run())?;
        Ok(HaActions {
            plans: Some(plans),
            thread: Some(thread),
        })
    }

    /// Hands the thread what to hold from now on (after a reload); it applies it at once.
    pub(super) fn publish(&self, plan: HaPlan) {
        if let Some(plans) = &self.plans {
            let _ = plans.send(plan);
        }
    }

    /// Stops the thread (it finishes the transition in progress) and returns the addresses it
    /// holds, for shutdown to release.
    pub(super) fn stop(mut self) -> HeldAddresses {
        self.shut_down()
    }

    fn shut_down(&mut self) -> HeldAddresses {
        // The thread ends when its plans channel closes.
        drop(self.plans.take());
        let Some(thread) = self.thread.take() else {
            return HeldAddresses::default();
        };
        thread.join().unwrap_or_else(|_| {
            error!("the HA actions thread panicked: the addresses it held stay");
            HeldAddresses::default()
        })
    }
}

impl Drop for HaActions {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The thread's state.
struct ActionThread {
    context: Context,
    netlink: Netlink,
    events: Receiver<HaEvent>,
    plans: Receiver<HaPlan>,
    plan: HaPlan,
    held: HeldAddresses,
}

impl ActionThread {
    fn run(mut self) -> HeldAddresses {
        self.sync_addresses();
        let retry = crossbeam_channel::tick(RETRY_INTERVAL);
        loop {
            crossbeam_channel::select! {
                recv(self.events) -> event => {
                    if let Ok(event) = event {
                        self.follow(event);
                    } else {
                        // The VRRP threads are gone: nothing advertises for us, so hold nothing.
                        error!("the VRRP thread stopped: giving up the VIPs");
                        self.follow(HaEvent::Fault);
                        self.events = crossbeam_channel::never();
                    }
                },
                recv(self.plans) -> plan => match plan {
                    Ok(plan) => {
                        self.plan = plan;
                        self.sync_addresses();
                    }
                    Err(_) => break,
                },
                recv(retry) -> _ => self.sync_addresses(),
            }
        }
        self.held
    }

    /// Follows one VRRP event.
    fn follow(&mut self, event: HaEvent) {
        match event {
            HaEvent::BecameMaster => self.take_over(),
            HaEvent::BecameBackup | HaEvent::Fault => {
                let fault = matches!(event, HaEvent::Fault);
                info!(fault, "VRRP: backup: giving up the VIPs");
                self.serve(false);
            }
            HaEvent::PeerSeen { address, priority } => {
                info!(%address, priority, "VRRP: router heard");
            }
        }
    }

    /// Adds the VIPs, steers their frames to the workers, then has them announced, and
    /// reports how long that took since VRRP decided.
    fn take_over(&mut self) {
        info!("VRRP: master: taking over the VIPs");
        self.serve(true);
        // From the decision of the state now in force: a newer one than this event's only if
        // another event is already queued behind it, which undoes this one anyway.
        let latency = self
            .context
            .status
            .decided_at()
            .map_or(Duration::ZERO, |decided| decided.elapsed());
        if let Err(error) = self.plan.announcer.announce() {
            warn!(%error, "could not announce the VIPs");
        }
        self.context.latency.record(latency);
        info!(
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            vips = self.held.vips.len(),
            "VRRP: master: VIPs added and steered to the workers"
        );
    }

    /// Serves (`true`) or stops serving: the addresses and the steering of every listed
    /// service, under the steering lock so that the main loop adding a service meanwhile sees
    /// the outcome. Giving up, the VIPs go first: frames still arriving are forwarded by the
    /// workers rather than reset by a kernel holding the VIP with nothing behind it. Taking
    /// over, the VIPs come first too, so the first steered frame finds them.
    fn serve(&mut self, on: bool) {
        if let Some(sync) = &self.context.sync {
            sync.set_role(if on { Role::Master } else { Role::Backup });
        }
        let steering = Arc::clone(&self.context.steering);
        let keys = steering.lock();
        self.context.serving.store(on, Ordering::Relaxed);
        self.sync_addresses();
        let client = &self.context.shared.interfaces[0].classifier;
        for key in keys.iter() {
            if let Err(error) = client.set_service(key, on) {
                warn!(%error, vip = %key.vip, port = key.port, "could not change a service's steering");
            }
        }
    }

    /// Holds what the plan says while serving and nothing otherwise; retries what failed.
    fn sync_addresses(&mut self) {
        let serving = self.context.serving.load(Ordering::Relaxed);
        let (vips, gateways) = wanted(&self.plan, serving);
        let interfaces = &self.context.shared.interfaces;
        sync_vips(
            &mut self.netlink,
            &interfaces[0],
            (&mut self.held.vips, &mut self.held.operators),
            &vips,
            true,
        );
        sync_gateways(
            &mut self.netlink,
            interfaces.get(1),
            (&mut self.held.gateways, &mut self.held.operators),
            &gateways,
        );
    }
}

/// The VIPs and gateway addresses to hold: the plan's while serving, none otherwise.
fn wanted(plan: &HaPlan, serving: bool) -> (BTreeSet<IpAddr>, BTreeSet<(IpAddr, u8)>) {
    if serving {
        (plan.vips.clone(), plan.gateways.clone())
    } else {
        (BTreeSet::new(), BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    //! The thread against the real thing, in a throwaway network namespace (needs root): a
    //! veth with the classifier attached, a VRRP router of ours alone on it (so it becomes
    //! master), the thread's own netlink socket.

    use std::fs::File;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::time::{Duration, Instant};

    use dataplane::testing::FrameBuilder;
    use dataplane::xdp::XdpClassifier;
    use dataplane::{Protocol, ServiceKey, ServiceTable};

    use super::*;
    use crate::config::HaConfig;
    use crate::director::state::Interface;
    use crate::ha::vrrp::Vrrp;
    use crate::health::HealthBoard;
    use crate::rates::RateTracker;
    use crate::table::PoolView;

    const WITHIN: Duration = Duration::from_secs(5);

    fn ip(args: &[&str]) {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A namespace with a veth pair (`ha0` up with 192.0.2.1/24, its peer up too), deleted on
    /// drop.
    struct Namespace(String);

    impl Namespace {
        fn new() -> Namespace {
            let name = format!("ha-actions-{}", std::process::id());
            ip(&["netns", "add", &name]);
            let namespace = Namespace(name);
            let name = namespace.0.as_str();
            ip(&["-n", name, "link", "set", "lo", "up"]);
            ip(&[
                "-n", name, "link", "add", "ha0", "type", "veth", "peer", "name", "ha1",
            ]);
            ip(&["-n", name, "addr", "add", "192.0.2.1/24", "dev", "ha0"]);
            // The operator's own host address, which the thread must never touch.
            ip(&["-n", name, "addr", "add", "192.0.2.99/32", "dev", "ha0"]);
            // A VIP an earlier run left, which the thread is handed and must give up.
            ip(&["-n", name, "addr", "add", "192.0.2.11/32", "dev", "ha0"]);
            ip(&["-n", name, "link", "set", "ha1", "up"]);
            ip(&["-n", name, "link", "set", "ha0", "up"]);
            namespace
        }

        /// Runs `body` on a thread inside the namespace, re-raising its panic here.
        fn enter<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
            let namespace = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
            std::thread::spawn(move || {
                #[expect(unsafe_code, reason = "setns has no safe wrapper in std")]
                // SAFETY: setns(2) on a valid namespace descriptor changes only this thread's
                // network namespace; the thread is ours and ends with `body`.
                let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
                body()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn addresses(netlink: &mut Netlink, ifindex: u32) -> BTreeSet<Ipv4Addr> {
        netlink
            .addresses(ifindex)
            .unwrap()
            .into_iter()
            .map(|(address, _)| address)
            .collect()
    }

    fn poll(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + WITHIN;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The classifier's verdict counter a SYN to `192.0.2.10:80` bumps: `service_disabled`
    /// while the service is steered to the kernel, `no_socket` once steered to the workers (the
    /// test has none).
    fn steered(classifier: &XdpClassifier) -> bool {
        let count = |name: &str| {
            classifier
                .counters()
                .unwrap()
                .into_iter()
                .find(|(counter, _)| *counter == name)
                .map_or(0, |(_, value)| value)
        };
        let before = count("no_socket");
        classifier
            .test_run(&FrameBuilder::tcp().syn().build())
            .unwrap();
        count("no_socket") > before
    }

    fn ha_config() -> HaConfig {
        HaConfig {
            interface: "ha0".into(),
            vrid: 61,
            priority: 150,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_peers: Vec::new(),
            sync: false,
            sync_id: 61,
            sync_port: 8848,
            server_address: None,
            server_address6: None,
            sync_key: None,
        }
    }

    // One at a time: they share the namespace's name.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_master_holds_the_planned_vips_steered_and_a_stop_hands_them_back() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let namespace = Namespace::new();
        namespace.enter(|| {
            let mut netlink = Netlink::open().unwrap();
            let ifindex = crate::netlink::interface_index("ha0").unwrap();
            let classifier = XdpClassifier::attach(ifindex).unwrap();
            let vip: IpAddr = "192.0.2.10".parse().unwrap();
            let key = ServiceKey {
                vip,
                port: 80,
                protocol: Protocol::Tcp,
            };
            classifier.set_service(&key, false).unwrap();
            let steering = Arc::new(Steering::default());
            steering.lock().insert(key);
            let shared = Arc::new(Shared {
                started: Instant::now(),
                table: Mutex::new(Arc::new(ServiceTable::empty(1))),
                pool: Mutex::new(PoolView::default()),
                health: Arc::new(HealthBoard::default()),
                interfaces: vec![Interface {
                    name: "ha0".into(),
                    ifindex,
                    mac: crate::netlink::interface_mac("ha0").unwrap(),
                    classifier,
                }],
                workers: Vec::new(),
                rates: RateTracker::new(),
                ha: OnceLock::new(),
                fib: None,
            });
            let vrrp = Vrrp::start(&ha_config(), "ha0", &[vip]).unwrap();
            let serving = Arc::new(AtomicBool::new(false));
            let latency = Arc::new(TakeoverLatency::default());
            let context = Context {
                shared: Arc::clone(&shared),
                steering,
                serving: Arc::clone(&serving),
                sync: None,
                status: vrrp.status_source(),
                latency: Arc::clone(&latency),
            };
            let plan = HaPlan {
                vips: BTreeSet::from([vip]),
                gateways: BTreeSet::new(),
                announcer: vrrp.announcer(),
            };
            let leftover: IpAddr = "192.0.2.11".parse().unwrap();
            let mut held = HeldAddresses {
                vips: BTreeSet::from([leftover]),
                gateways: BTreeSet::new(),
                operators: BTreeSet::new(),
            };
            let actions =
                HaActions::start(context, vrrp.events().clone(), plan, &mut held).unwrap();
            let classifier = &shared.interfaces[0].classifier;

            // Not master yet: the leftover goes, the operator's address stays.
            poll("the leftover VIP to go", || {
                !addresses(&mut netlink, ifindex).contains(&Ipv4Addr::new(192, 0, 2, 11))
            });
            assert!(!steered(classifier));

            // Alone on its link, the router becomes master: the thread adds and steers the VIP.
            poll("the VIP to be added", || {
                addresses(&mut netlink, ifindex).contains(&Ipv4Addr::new(192, 0, 2, 10))
            });
            poll("the service to be steered", || steered(classifier));
            assert!(serving.load(Ordering::Relaxed));
            // Measured from VRRP's decision to the VIP steered: some time, and a takeover's.
            poll("the latency to be recorded", || {
                latency.last_us.load(Ordering::Relaxed) > 0
            });
            assert_eq!(
                latency.max_us.load(Ordering::Relaxed),
                latency.last_us.load(Ordering::Relaxed)
            );

            // A new plan (a reload adding a VIP) is held at once while master.
            let added: IpAddr = "192.0.2.12".parse().unwrap();
            actions.publish(HaPlan {
                vips: BTreeSet::from([vip, added]),
                gateways: BTreeSet::new(),
                announcer: vrrp.announcer(),
            });
            poll("the reload's VIP to be added", || {
                addresses(&mut netlink, ifindex).contains(&Ipv4Addr::new(192, 0, 2, 12))
            });

            // Stopped, it hands back what it holds (for shutdown to release), and nothing else.
            let held = actions.stop();
            assert_eq!(held.vips, BTreeSet::from([vip, added]));
            let present = addresses(&mut netlink, ifindex);
            assert!(
                present.contains(&Ipv4Addr::new(192, 0, 2, 99)),
                "{present:?}"
            );
            assert!(
                present.contains(&Ipv4Addr::new(192, 0, 2, 10)),
                "{present:?}"
            );
            let _ = vrrp.shutdown();
        });
    }

    #[test]
    fn the_plan_is_held_only_while_serving() {
        let plan = HaPlan {
            vips: BTreeSet::from([
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ]),
            gateways: BTreeSet::from([("198.51.100.1".parse().unwrap(), 24)]),
            announcer: VipAnnouncer::default(),
        };
        assert_eq!(
            wanted(&plan, true),
            (plan.vips.clone(), plan.gateways.clone())
        );
        assert_eq!(wanted(&plan, false), (BTreeSet::new(), BTreeSet::new()));
    }
}
