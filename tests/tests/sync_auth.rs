//! End-to-end: authenticated state sync (`[ha] sync_key`) between real `director` processes.
//! Three directors in one VRRP group with sync over the lab's segment: the primary (its key in
//! a file) and a backup share a key, a third director has another. Client connections through
//! the primary reach the backup's workers; the third imports nothing and counts every datagram
//! as a bad tag. Then the third is given the right key by a reload, and imports too.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use director_lab::{require_root, vip_url, DirectorProcess, Host, Lab, LabOptions};
use serde_json::Value;

/// Advertisement interval of the group.
const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a director may take to get where a test waits for.
const WITHIN: Duration = Duration::from_secs(5);

const PRIMARY: Host = Host::Director;
const BACKUP: Host = Host::ExtraDirector(2);
const STRANGER: Host = Host::ExtraDirector(3);

/// The pair's key, and another (both at least 16 bytes, as `base64` of 32 random bytes is).
const KEY: &str = "Zm9yIHRoZSBsYWIgb25seSwgbm90IGEgcmVhbCBrZXk=";
const OTHER_KEY: &str = "YW5vdGhlciBwYWlyJ3Mga2V5LCBqdXN0IGFzIGxvbmc=";

/// The lab's DR config for `host` with an `[ha]` table (vrid 51, `priority`, sync on) and the
/// `key` line; returns the file and the stats socket.
fn config_text(lab: &Lab, host: Host, priority: u8, key: &str) -> (String, PathBuf) {
    let socket = lab.stats_socket_of(host);
    let mut config = lab.dr_config("maglev");
    config.stats_socket.clone_from(&socket);
    let text = format!(
        "{}\n[ha]\nvrid = 51\npriority = {priority}\nadvert_interval = \"{}ms\"\nsync = true\n{key}\n",
        config.to_toml(),
        ADVERT_INTERVAL.as_millis()
    );
    (text, socket)
}

fn start(lab: &Lab, host: Host, priority: u8, key: &str) -> (DirectorProcess, PathBuf) {
    let (text, socket) = config_text(lab, host, priority, key);
    let path = lab.write_config_text(&text);
    let director = lab.start_director_on(host, &path, &socket, host == PRIMARY);
    (director, path)
}

/// `ha.sync` of the director's stats.
fn sync_stats(director: &DirectorProcess) -> Value {
    director.stats()["ha"]["sync"].clone()
}

/// Records the director's workers imported from sync.
fn imported(stats: &Value) -> u64 {
    stats["workers"].as_array().map_or(0, |workers| {
        workers
            .iter()
            .filter_map(|worker| worker["counters"]["sync_records_imported"].as_u64())
            .sum()
    })
}

fn counter(sync: &Value, name: &str) -> u64 {
    sync[name].as_u64().unwrap_or(0)
}

fn wait_for_state(director: &DirectorProcess, state: &str) {
    director
        .wait_for_stats(&format!("VRRP state {state}"), WITHIN, |stats| {
            (stats["ha"]["state"].as_str() == Some(state)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", director.log()));
}

/// Writes `key` (and a newline) to a lab file only its owner may read.
fn key_file(lab: &Lab, key: &str) -> PathBuf {
    let path = lab.new_file("sync.key");
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn sync_is_imported_with_the_shared_key_only_and_a_reload_changes_the_key() {
    require_root!();
    let lab = Lab::dr(LabOptions::directors(3, 2));
    // The primary reads the key from a file; the others have it inline.
    let key_path = key_file(&lab, KEY);
    let (primary, _) = start(
        &lab,
        PRIMARY,
        150,
        &format!("sync_key_file = {:?}", key_path.display().to_string()),
    );
    let (backup, _) = start(&lab, BACKUP, 100, &format!("sync_key = {KEY:?}"));
    let (stranger, stranger_config) =
        start(&lab, STRANGER, 50, &format!("sync_key = {OTHER_KEY:?}"));
    wait_for_state(&primary, "MASTER");
    wait_for_state(&backup, "BACKUP");
    wait_for_state(&stranger, "BACKUP");
    assert_eq!(sync_stats(&primary)["authenticated"], Value::Bool(true));

    let results = lab.http_get_many(5, &vip_url());
    director_lab::assert_all_ok(&results, "requests through the primary");

    // The backup with the same key imports the flows.
    backup
        .wait_for_stats("the backup to import synced flows", WITHIN, |stats| {
            (imported(stats) > 0).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nbackup log:\n{}", backup.log()));
    // The third refuses every datagram as a bad tag and imports nothing.
    stranger
        .wait_for_stats(
            "the third director to refuse the datagrams",
            WITHIN,
            |stats| (counter(&stats["ha"]["sync"], "auth_bad_tag") > 0).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", stranger.log()));
    let sent = counter(&sync_stats(&primary), "datagrams_sent");
    let of_backup = sync_stats(&backup);
    let of_stranger = sync_stats(&stranger);
    println!("primary sent {sent} datagrams; backup {of_backup}; third {of_stranger}");
    for name in ["auth_bad_tag", "auth_missing", "auth_replayed"] {
        assert_eq!(counter(&of_backup, name), 0, "backup {name}: {of_backup}");
    }
    assert!(counter(&of_backup, "records_received") > 0, "{of_backup}");
    for name in ["records_received", "datagrams_received", "auth_missing"] {
        assert_eq!(
            counter(&of_stranger, name),
            0,
            "third {name}: {of_stranger}"
        );
    }
    assert_eq!(imported(&stranger.stats()), 0);

    // A reload gives the third the pair's key: the next flows reach it too.
    let (text, _) = config_text(&lab, STRANGER, 50, &format!("sync_key = {KEY:?}"));
    std::fs::write(&stranger_config, text).unwrap();
    stranger.reload().assert_ok();
    let refused = counter(&sync_stats(&stranger), "auth_bad_tag");
    let results = lab.http_get_many(5, &vip_url());
    director_lab::assert_all_ok(&results, "requests after the reload");
    stranger
        .wait_for_stats(
            "the third director to import after the reload",
            WITHIN,
            |stats| (imported(stats) > 0).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", stranger.log()));
    let after = sync_stats(&stranger);
    // Datagrams in flight during the reload may still be refused; none after it is.
    assert!(
        counter(&after, "auth_bad_tag") <= refused + 1,
        "refused {refused} before the reload, now {after}"
    );
    assert_eq!(counter(&after, "auth_replayed"), 0, "{after}");
}
