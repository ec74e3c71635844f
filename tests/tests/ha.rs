//! End-to-end: two `director` processes in one VRRP group (`[ha]`), DR with Maglev, under
//! continuous client load. The master's link goes down; the backup takes the VIP and forwards;
//! an established keep-alive connection carries on through it (both directors compute the same
//! Maglev table, and a mid-flow segment is picked up); the primary comes back and preempts; a
//! reload does not hand over; a clean stop hands over with priority 0. State sync runs
//! throughout and its counters show the records crossing. With NAT, state sync carries an
//! established connection and a persistent client across the failover. And the director
//! binary trades the VIP with a real keepalived. A takeover does not wait for a reload that
//! waits for an unresolvable neighbour.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use director_lab::{
    poll_until, require_root, vip_url, BackendConfig, DirectorConfig, DirectorProcess, Host,
    HttpResponse, Keepalived, KeepalivedOptions, KeepalivedState, Lab, LabOptions, LoadHandle,
    LoadOptions, SERVER_SIDE_IP,
};
use serde_json::Value;

/// Advertisement interval of the group.
const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a director, keepalived or the client load may take to get where a test waits for.
const WITHIN: Duration = Duration::from_secs(5);

/// The primary director, priority 150, and the backup, 100.
const PRIMARY: Host = Host::Director;
const BACKUP: Host = Host::ExtraDirector(2);

/// A director's config file and its stats socket.
type ConfigFiles = (PathBuf, PathBuf);

/// Writes `config` for `host` with its own stats socket and an `[ha]` table (`vrid`,
/// `priority`, the group's interval, sync, then `more` keys), and returns it with the socket.
fn write_ha_config(
    lab: &Lab,
    host: Host,
    config: DirectorConfig,
    vrid: u8,
    priority: u8,
    more: &str,
) -> ConfigFiles {
    let socket = lab.stats_socket_of(host);
    let text = ha_config_text(config, &socket, vrid, priority, more);
    (lab.write_config_text(&text), socket)
}

/// `config` with stats socket `socket` and the `[ha]` table [`write_ha_config`] writes.
fn ha_config_text(
    mut config: DirectorConfig,
    socket: &std::path::Path,
    vrid: u8,
    priority: u8,
    more: &str,
) -> String {
    socket.clone_into(&mut config.stats_socket);
    format!(
        "{}\n[ha]\nvrid = {vrid}\npriority = {priority}\nadvert_interval = \"{}ms\"\nsync = true\n{more}",
        config.to_toml(),
        ADVERT_INTERVAL.as_millis()
    )
}

/// Writes the lab's DR config for `host` with an `[ha]` table of `priority`, and returns it
/// with its stats socket.
fn ha_config(lab: &Lab, host: Host, priority: u8) -> ConfigFiles {
    write_ha_config(lab, host, lab.dr_config("maglev"), 51, priority, "")
}

/// Starts the director on `host` from `config`; ready once, if `wait_for_vip`, it holds the VIP
/// (false for a backup).
fn start(lab: &Lab, host: Host, config: &ConfigFiles, wait_for_vip: bool) -> DirectorProcess {
    let (config, socket) = config;
    lab.start_director_on(host, config, socket, wait_for_vip)
}

/// Starts the primary and the backup, and waits until they are master and backup.
fn start_pair(
    lab: &Lab,
    primary: &ConfigFiles,
    backup: &ConfigFiles,
) -> (DirectorProcess, DirectorProcess) {
    let primary = start(lab, PRIMARY, primary, true);
    let backup = start(lab, BACKUP, backup, false);
    wait_for_state(&primary, "MASTER");
    wait_for_state(&backup, "BACKUP");
    (primary, backup)
}

fn ha_state(stats: &Value) -> String {
    stats["ha"]["state"].as_str().unwrap_or("none").to_owned()
}

fn wait_for_state(director: &DirectorProcess, state: &str) {
    director
        .wait_for_stats(&format!("VRRP state {state}"), WITHIN, |stats| {
            (ha_state(stats) == state).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", director.log()));
}

fn wait_for_keepalived(keepalived: &mut Keepalived, state: KeepalivedState) {
    keepalived
        .wait_for_state(state, WITHIN)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
}

/// Requests of `results` that succeeded.
fn successes(results: &[anyhow::Result<HttpResponse>]) -> usize {
    results.iter().flatten().count()
}

/// Waits until `load` has had `count` successful requests.
fn wait_for_successes(load: &mut LoadHandle, what: &str, count: usize) {
    load.wait_until(what, WITHIN, |r| successes(r) >= count)
        .unwrap();
}

/// Frames the director's workers received.
fn rx_packets(director: &DirectorProcess) -> u64 {
    director_lab::stats::workers_rx_packets(&director.stats())
}

#[test]
fn backup_director_takes_over_keeps_flows_and_hands_back() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(2, 3));
    let (primary, backup) = start_pair(
        &lab,
        &ha_config(&lab, PRIMARY, 150),
        &ha_config(&lab, BACKUP, 100),
    );
    assert!(!lab.has_address(BACKUP, director_lab::VIP));

    // An established connection through the primary, and continuous new ones.
    let mut keep_alive = lab.keep_alive(&vip_url(), None);
    let first = keep_alive
        .get()
        .expect("a keep-alive request through the primary");
    let options = LoadOptions {
        timeout: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    let mut load = lab.start_load(&vip_url(), &options);
    wait_for_successes(&mut load, "requests through the primary", 5);

    // A reload on the master changes nothing in the group.
    let transitions = primary.stats()["ha"]["transitions"].as_u64();
    primary.reload().assert_ok();
    assert_eq!(ha_state(&primary.stats()), "MASTER");
    assert_eq!(primary.stats()["ha"]["transitions"].as_u64(), transitions);

    let backup_rx = rx_packets(&backup);
    let down = Instant::now();
    lab.set_link(PRIMARY, false);
    poll_until(
        "the backup to forward",
        WITHIN,
        Duration::from_millis(10),
        || {
            let stats = backup.stats();
            let forwarding = director_lab::stats::workers_rx_packets(&stats) > backup_rx;
            if ha_state(&stats) == "MASTER" && forwarding {
                Ok(())
            } else {
                Err(format!("state {}", ha_state(&stats)))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));
    let gap = down.elapsed();
    println!("failover: the backup forwarded {gap:?} after the master's link went down");
    // 100 ms adverts: a master-down interval of 361 ms, then gratuitous ARP.
    assert!(gap < Duration::from_secs(1), "{gap:?}");
    let ok_before = successes(&load.results());
    wait_for_successes(&mut load, "requests through the backup", ok_before + 5);

    // The established connection carries on through the backup, to the same real server.
    let after = keep_alive
        .get()
        .expect("the keep-alive connection through the backup");
    assert_eq!(after.server, first.server);

    // The primary returns and preempts; the connection carries on through it again.
    let up = Instant::now();
    lab.set_link(PRIMARY, true);
    wait_for_state(&primary, "MASTER");
    wait_for_state(&backup, "BACKUP");
    println!(
        "preemption: the primary is master {:?} after its link came back",
        up.elapsed()
    );
    let ok_before = successes(&load.results());
    wait_for_successes(
        &mut load,
        "requests through the primary again",
        ok_before + 5,
    );
    let again = keep_alive.get().expect("the keep-alive connection, back");
    assert_eq!(again.server, first.server);

    let results = load.stop();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "{} requests, {failed} failed across the two handovers",
        results.len()
    );

    // State sync ran: the master sent, the backup applied.
    let sent = primary.stats()["ha"]["sync"]["records_sent"]
        .as_u64()
        .unwrap_or(0);
    let received = backup.stats()["ha"]["sync"]["records_received"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        sent > 0 && received > 0,
        "sync sent {sent}, received {received}"
    );
}

#[test]
fn a_stopping_master_hands_over_with_priority_zero() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(2, 1));
    let (mut primary, backup) = start_pair(
        &lab,
        &ha_config(&lab, PRIMARY, 150),
        &ha_config(&lab, BACKUP, 100),
    );
    let stop = Instant::now();
    primary.stop();
    wait_for_state(&backup, "MASTER");
    let handover = stop.elapsed();
    println!("clean stop: the backup is master {handover:?} after the primary was told to stop");
    assert!(lab.has_address(BACKUP, director_lab::VIP));
    assert!(!lab.has_address(PRIMARY, director_lab::VIP));
    let results = lab.http_get_many(10, &vip_url());
    director_lab::assert_all_ok(&results, "requests through the new master");
}

/// Writes the NAT lab's config for `host` (backends in `order`, so the two directors'
/// schedulers disagree) with persistence and an `[ha]` table with sync and the floating
/// server-side gateway.
fn nat_ha_config(lab: &Lab, host: Host, priority: u8, order: &[usize]) -> ConfigFiles {
    let mut config = lab.nat_config("rr", Some(BACKEND_PORT));
    let service = &mut config.services[0];
    service.persistence = Some("300s".into());
    service.backends = order
        .iter()
        .map(|&i| {
            let mut backend = service.backends[i - 1].clone();
            backend.port = Some(BACKEND_PORT);
            backend
        })
        .collect();
    let server_address = format!("server_address = \"{SERVER_SIDE_IP}/24\"\n");
    write_ha_config(lab, host, config, 52, priority, &server_address)
}

/// The real servers' port behind the NAT VIP:80.
const BACKEND_PORT: u16 = 8080;

#[test]
fn nat_flows_and_persistence_survive_a_failover_through_state_sync() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::directors(2, 2)
    });
    // The backup lists the servers the other way round: on its own, its round robin would
    // send a client elsewhere, and it has never seen the flow's SYN.
    let (_primary, backup) = start_pair(
        &lab,
        &nat_ha_config(&lab, PRIMARY, 150, &[1, 2]),
        &nat_ha_config(&lab, BACKUP, 100, &[2, 1]),
    );

    let mut keep_alive = lab.keep_alive(&vip_url(), None);
    let first = keep_alive
        .get()
        .expect("a keep-alive request through the primary");
    assert_eq!(first.port, BACKEND_PORT);
    // The flow's records and its client's template reach the backup.
    backup
        .wait_for_stats("the backup to import the flow", WITHIN, |stats| {
            let imported: u64 = stats["workers"]
                .as_array()?
                .iter()
                .filter_map(|worker| worker["counters"]["sync_records_imported"].as_u64())
                .sum();
            (imported > 0).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));

    lab.set_link(PRIMARY, false);
    wait_for_state(&backup, "MASTER");
    // The established NAT connection carries on: the backup translates the client's next
    // request to the same real server and that server's replies back to the VIP.
    let after = keep_alive
        .get()
        .expect("the NAT keep-alive connection through the backup");
    assert_eq!(
        after.server, first.server,
        "the flow moved to another server"
    );
    // Persistence: a new connection from the same client goes to the same server too.
    let fresh = lab.http_get_many(3, &vip_url());
    director_lab::assert_all_ok(&fresh, "new connections through the backup");
    for response in fresh.iter().flatten() {
        assert_eq!(
            response.server, first.server,
            "persistence lost: {response:?}"
        );
    }
    assert!(lab.has_address(BACKUP, director_lab::VIP));
}

#[test]
fn the_director_and_keepalived_hand_the_vip_to_each_other() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(2, 1));
    let config = ha_config(&lab, PRIMARY, 150);
    let mut director = start(&lab, PRIMARY, &config, true);
    wait_for_state(&director, "MASTER");
    // keepalived 2.x, VRRPv3, priority 100, same vrid and VIP: it must stay backup.
    let mut keepalived = lab.start_keepalived(BACKUP, &KeepalivedOptions::new(100));
    wait_for_keepalived(&mut keepalived, KeepalivedState::Backup);
    // Several master-down intervals later nothing has changed: our adverts reach keepalived.
    let settle = Instant::now() + Duration::from_secs(1);
    director
        .wait_for_stats(
            "keepalived to settle as backup",
            Duration::from_secs(3),
            |stats| (Instant::now() >= settle).then(|| stats["ha"]["transitions"].as_u64()),
        )
        .unwrap();
    assert_eq!(
        keepalived.states(),
        [KeepalivedState::Backup],
        "{}",
        keepalived.log()
    );
    assert_eq!(ha_state(&director.stats()), "MASTER");
    director_lab::assert_all_ok(&lab.http_get_many(5, &vip_url()), "through the director");

    // The director stops (priority 0): keepalived takes the VIP.
    let stop = Instant::now();
    director.stop();
    wait_for_keepalived(&mut keepalived, KeepalivedState::Master);
    println!(
        "keepalived master {:?} after the director stopped",
        stop.elapsed()
    );
    assert!(lab.has_address(BACKUP, director_lab::VIP));

    // A director started again preempts keepalived (150 > 100) and serves.
    let director = start(&lab, PRIMARY, &config, true);
    wait_for_state(&director, "MASTER");
    wait_for_keepalived(&mut keepalived, KeepalivedState::Backup);
    director_lab::assert_all_ok(
        &lab.http_get_many(5, &vip_url()),
        "through the director again",
    );
}

#[test]
fn a_nat_master_that_loses_its_server_side_hands_over() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::directors(2, 2)
    });
    let (primary, backup) = start_pair(
        &lab,
        &nat_ha_config(&lab, PRIMARY, 150, &[1, 2]),
        &nat_ha_config(&lab, BACKUP, 100, &[1, 2]),
    );
    director_lab::assert_all_ok(&lab.http_get_many(4, &vip_url()), "through the primary");
    // The client side is fine; only the real servers are out of reach.
    lab.exec_ok(PRIMARY, &["ip", "link", "set", "eth1", "down"]);
    wait_for_state(&primary, "FAULT");
    wait_for_state(&backup, "MASTER");
    // The gateway address moved with the VIP, so the real servers' replies reach the backup.
    let on_backup = lab.exec_ok(BACKUP, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]);
    assert!(
        on_backup.contains(&format!("{SERVER_SIDE_IP}/24")),
        "{on_backup}"
    );
    director_lab::assert_all_ok(&lab.http_get_many(4, &vip_url()), "through the backup");
    assert!(!lab.has_address(PRIMARY, director_lab::VIP));
}

/// An address on the lab's segment that nothing holds: nobody answers ARP for it.
const UNRESOLVABLE_SERVER: &str = "192.0.2.200";

#[test]
fn a_takeover_does_not_wait_for_a_reload_waiting_for_an_unresolvable_neighbour() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(2, 1));
    let (_primary, backup) = start_pair(
        &lab,
        &ha_config(&lab, PRIMARY, 150),
        &ha_config(&lab, BACKUP, 100),
    );
    // The backup's configuration gains a real server on the segment that never answers ARP:
    // each reload of it waits the whole neighbour timeout in the main loop. (Weight 0: its MAC
    // is still awaited, but it takes no flows, which it would blackhole.)
    let mut config = lab.dr_config("maglev");
    config.services[0].backends.push(BackendConfig {
        address: UNRESOLVABLE_SERVER.to_owned(),
        weight: Some(0),
        port: None,
    });
    backup.replace_config_text(&ha_config_text(config, backup.stats_socket(), 51, 100, ""));

    let taken_over = AtomicBool::new(false);
    let reloads = std::thread::scope(|scope| {
        // Reload after reload until the takeover is seen, so the main loop is (nearly) always
        // inside one's wait when VRRP decides.
        let reloading = scope.spawn(|| {
            let mut outputs = Vec::new();
            while !taken_over.load(Ordering::Relaxed) {
                outputs.push(backup.reload());
            }
            outputs
        });
        poll_until(
            "the backup's reload to wait for the neighbour",
            WITHIN,
            Duration::from_millis(5),
            || {
                if backup.log().contains(RELOAD_WAITS) {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));
        let down = Instant::now();
        lab.set_link(PRIMARY, false);
        poll_until(
            "the backup to hold the VIP and serve",
            WITHIN,
            Duration::from_millis(10),
            || {
                let stats = backup.stats();
                let serving = stats["ha"]["serving"].as_bool() == Some(true);
                if serving && lab.has_address(BACKUP, director_lab::VIP) {
                    Ok(())
                } else {
                    Err(format!("state {}, serving {serving}", ha_state(&stats)))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));
        let took = down.elapsed();
        taken_over.store(true, Ordering::Relaxed);
        // The bound, generous: a master-down interval (361 ms) and the transition,
        // against reloads of a second each.
        assert!(
            took < Duration::from_secs(2),
            "took {took:?}\nbackup log:\n{}",
            backup.log()
        );
        println!("takeover: the backup held and steered the VIP {took:?} after the master's link went down");
        reloading.join().unwrap()
    });
    let log = backup.log();
    for output in &reloads {
        output.assert_ok();
    }

    // The order in the backup's log: a reload began waiting for the neighbour, the takeover
    // completed, and only then did that wait time out and that reload finish.
    let takeover = log
        .find(TAKEOVER_DONE)
        .unwrap_or_else(|| panic!("no takeover in the log:\n{log}"));
    let began = log[..takeover]
        .rfind(RELOAD_WAITS)
        .unwrap_or_else(|| panic!("no reload before the takeover:\n{log}"));
    let after_began = |needle: &str| {
        let offset = log[began..]
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} after the reload began:\n{log}"));
        began + offset
    };
    let finished = after_began("reloaded ");
    let timed_out = after_began("neighbours without a MAC address yet");
    assert!(
        takeover < timed_out && timed_out < finished,
        "the takeover waited for the reload:\n{log}"
    );

    // The new master serves, and says how long its takeover took.
    director_lab::assert_all_ok(&lab.http_get_many(5, &vip_url()), "through the new master");
    let latency = backup.stats()["ha"]["takeover_latency_us"]
        .as_u64()
        .unwrap_or(0);
    assert!(latency > 0, "no takeover latency in the stats");
    println!("takeover latency as the director measured it: {latency} us");
}

/// The backup's log line when a reload starts waiting for real servers' MACs.
const RELOAD_WAITS: &str = "reload: resolving new real servers' MACs";
/// Its log line once a takeover has added and steered the VIPs.
const TAKEOVER_DONE: &str = "VRRP: master: VIPs added and steered";
