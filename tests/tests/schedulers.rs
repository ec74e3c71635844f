//! End-to-end: every scheduler forwards, and weights shape the spread.

use std::collections::BTreeMap;

use director_lab::{
    assert_all_ok, failures, require_root, rs_name, tally, vip_url, DirectorConfig, Lab,
    LabOptions, CLIENT_IP,
};

/// Every scheduler name the config accepts (`mh` is Maglev's IPVS name).
const SCHEDULERS: [&str; 12] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "maglev", "mh",
];

/// Schedulers whose picks rotate or hash the whole 5-tuple, so sequential connections from one
/// client spread over every server. (`lc`/`wlc` spread too when closed flows count as inactive,
/// as in IPVS; `sed`/`nq` pick the first idle server, and sequential connections leave every
/// server idle; `lblc`/`lblcr` keep one destination IP on one server; none is asserted.)
const SPREADING: [&str; 4] = ["rr", "wrr", "maglev", "mh"];
/// Schedulers that hash only one address (the client's for `sh`, the VIP for `dh`): one client
/// to one VIP lands on one server.
const ONE_SERVER: [&str; 2] = ["sh", "dh"];

const REQUESTS: usize = 60;

#[test]
fn every_scheduler_forwards() {
    require_root!();
    // One lab, one director at a time (2 cores): each scheduler gets a fresh director.
    let lab = Lab::dr(LabOptions::default());
    let mut problems: BTreeMap<&str, String> = BTreeMap::new();
    for scheduler in SCHEDULERS {
        let director = lab.start_director(&lab.dr_config(scheduler));
        let results = lab.http_get_many(REQUESTS, &vip_url());
        let served = tally(&results);
        println!("{scheduler}: requests per real server: {served:?}");
        let failed = failures(&results);
        let mut problem = None;
        if !failed.is_empty() {
            problem = Some(format!(
                "{} of {REQUESTS} failed; first: {:?}",
                failed.len(),
                &failed[..failed.len().min(3)]
            ));
        } else if let Some(r) = results
            .iter()
            .flatten()
            .find(|r| r.client_ip() != CLIENT_IP)
        {
            problem = Some(format!("a real server saw {} (not the client)", r.client));
        } else if SPREADING.contains(&scheduler) && served.len() != 3 {
            problem = Some(format!("did not spread over 3 servers: {served:?}"));
        } else if ONE_SERVER.contains(&scheduler) && served.len() != 1 {
            problem = Some(format!(
                "one client to one VIP should land on one server: {served:?}"
            ));
        }
        if let Some(problem) = problem {
            eprintln!(
                "--- {scheduler}: {problem}; director log ---\n{}--- end ---",
                director.log()
            );
            problems.insert(scheduler, problem);
        }
        drop(director); // stops it before the next one takes the interface
    }
    assert!(problems.is_empty(), "schedulers that failed: {problems:#?}");
}

#[test]
fn weights_3_1_0_spread() {
    require_root!();
    // wrr is exact (300:100). Maglev fills its table in proportion to the weights and hashes
    // each connection's 5-tuple, so 400 connections land near 3:1. wlc is included: with
    // sequential short connections hardly any flow is active, but wlc's overhead
    // (256 * active + inactive) / weight counts the closed flows the director still tracks, and
    // those pile up in proportion to the weights over the ~2 s run (they expire only after the
    // FIN/TIME_WAIT timeouts), so it converges on 3:1 too; a director that forgets closed flows
    // at once would send every connection to the first server with the best ratio, and fail.
    let lab = Lab::dr(LabOptions::default());
    let mut problems = Vec::new();
    for scheduler in ["wrr", "maglev", "wlc"] {
        let mut config: DirectorConfig = lab.dr_config(scheduler);
        config.services[0].set_weights(&[3, 1, 0]);
        let director = lab.start_director(&config);
        let results = lab.http_get_many(400, &vip_url());
        assert_all_ok(&results, scheduler);
        let served = tally(&results);
        let count = |i: usize| served.get(&rs_name(i)).copied().unwrap_or(0);
        let (rs1, rs2, rs3) = (count(1), count(2), count(3));
        #[expect(clippy::cast_precision_loss, reason = "request counts are small")]
        let rs1_share = 100.0 * rs1 as f64 / (rs1 + rs2).max(1) as f64;
        println!("{scheduler} 3:1:0 -> rs1 {rs1}, rs2 {rs2}, rs3 {rs3} (rs1 {rs1_share:.1}%)");
        let problem = if rs3 != 0 {
            Some(format!("rs3 has weight 0 but served {rs3}"))
        } else if !(65.0..=85.0).contains(&rs1_share) {
            Some(format!(
                "rs1:rs2 = {rs1}:{rs2} ({rs1_share:.1}%), expected 75:25 +- 10"
            ))
        } else if scheduler == "wrr" && (rs1, rs2) != (300, 100) {
            Some(format!(
                "wrr is deterministic: expected 300:100, got {rs1}:{rs2}"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            eprintln!(
                "--- {scheduler}: {problem}; director log ---\n{}--- end ---",
                director.log()
            );
            problems.push(format!("{scheduler}: {problem}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
