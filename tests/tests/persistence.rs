//! End-to-end: persistence pins a client to one real server across the ports of a service group.

use std::collections::BTreeSet;

use director_lab::{
    assert_all_ok, require_root, tally, vip_url_port, GetOptions, HttpResponse, Lab, LabOptions,
    CLIENT_IP, EXTRA_CLIENT_IPS,
};

const PORTS: [u16; 2] = [80, 443];

/// A lab whose real servers answer on 80 and 443, with a second client address.
fn lab() -> Lab {
    let lab = Lab::dr(LabOptions {
        real_servers: 3,
        ports: PORTS.to_vec(),
        ..LabOptions::default()
    });
    lab.add_client_address(EXTRA_CLIENT_IPS[0]);
    lab
}

/// `count` requests from `source`, alternating :80 and :443; all must succeed and have come from
/// `source`, and both ports must have been used.
fn alternating(lab: &Lab, count: usize, source: &str) -> Vec<HttpResponse> {
    let urls: Vec<String> = PORTS.iter().map(|&p| vip_url_port(p)).collect();
    let results = lab.http_get(&GetOptions::alternating(count, &urls).from_address(source));
    assert_all_ok(&results, &format!("alternating :80/:443 from {source}"));
    let responses: Vec<HttpResponse> = results.into_iter().map(Result::unwrap).collect();
    for r in &responses {
        assert_eq!(r.client_ip(), source, "{r:?}");
    }
    let ports: BTreeSet<u16> = responses.iter().map(|r| r.port).collect();
    assert_eq!(
        ports,
        PORTS.into_iter().collect(),
        "the real servers saw both ports"
    );
    responses
}

fn servers(responses: &[HttpResponse]) -> BTreeSet<String> {
    responses.iter().map(|r| r.server.clone()).collect()
}

#[test]
fn persistence_pins_a_client_across_ports() {
    require_root!();
    let lab = lab();
    let second = EXTRA_CLIENT_IPS[0];

    // Control: the same service group without persistence rotates (rr) over every server.
    {
        let director = lab.start_director(&lab.dr_config("rr"));
        let responses = alternating(&lab, 99, CLIENT_IP);
        let served = tally(&responses.into_iter().map(Ok).collect::<Vec<_>>());
        println!("no persistence: {served:?}");
        assert_eq!(
            served.len(),
            3,
            "without persistence rr spreads over all servers: {served:?}"
        );
        drop(director);
    }

    // persistence = "300s": one client address -> one server, whichever port.
    let mut config = lab.dr_config("rr");
    config.services[0].persistence = Some("300s".into());
    let director = lab.start_director(&config);
    let first = alternating(&lab, 100, CLIENT_IP);
    let first_servers = servers(&first);
    println!("persistence, {CLIENT_IP}: {first_servers:?}");
    assert_eq!(
        first_servers.len(),
        1,
        "100 requests from {CLIENT_IP} over :80 and :443 reached {first_servers:?}"
    );
    let other = alternating(&lab, 40, second);
    let other_servers = servers(&other);
    println!("persistence, {second}: {other_servers:?}");
    assert_eq!(
        other_servers.len(),
        1,
        "40 requests from {second} reached {other_servers:?}"
    );
    // The first client is still pinned where it was.
    let again = servers(&alternating(&lab, 10, CLIENT_IP));
    assert_eq!(again, first_servers, "{CLIENT_IP} moved");
    drop(director);

    // persistence_netmask = 255.255.255.0: both addresses are one client for persistence.
    config.services[0].persistence_netmask = Some("255.255.255.0".into());
    let _director = lab.start_director(&config);
    let mut both = alternating(&lab, 50, CLIENT_IP);
    both.extend(alternating(&lab, 50, second));
    let both_servers = servers(&both);
    println!("persistence /24: {both_servers:?}");
    assert_eq!(
        both_servers.len(),
        1,
        "{CLIENT_IP} and {second} share a /24 but reached {both_servers:?}"
    );
}
