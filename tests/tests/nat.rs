//! End-to-end: the director in masquerading mode (LVS-NAT) between two segments, with port
//! mapping, replies translated back to the VIP, and ICMP errors from the real servers
//! translated for the client. The director's kernel forwarding stays off throughout: every
//! frame that crosses from one segment to the other is the data plane's doing.

use std::time::Duration;

use director_lab::{
    assert_all_ok, poll_until, require_root, rs_name, tally, vip_url, GetOptions, Host, Lab,
    LabOptions, CLIENT_IP, DIRECTOR_IP, VIP,
};

const REQUESTS: usize = 60;
/// The port the real servers listen on; the service is VIP:80.
const BACKEND_PORT: u16 = 8080;
/// A source port the client connects from again and again (nothing else in the test binds it).
const REUSED_PORT: u16 = 40123;

fn kernel_forwarding(lab: &Lab) -> String {
    lab.exec_ok(Host::Director, &["sysctl", "-n", "net.ipv4.ip_forward"])
        .trim()
        .to_owned()
}

#[test]
fn nat_forwards_http_with_port_mapping() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::default()
    });
    assert_eq!(kernel_forwarding(&lab), "0");
    // Routed through the director's kernel, the client does not reach the real servers'
    // segment: the kernel does not forward, so whatever crosses below is the data plane.
    lab.exec_ok(
        Host::Client,
        &["ip", "route", "add", "198.51.100.0/24", "via", DIRECTOR_IP],
    );
    assert!(
        lab.tcp_connects(Host::Client, &lab.rs_address(1), BACKEND_PORT)
            .is_err(),
        "the client reached {} through the director's kernel",
        lab.rs_address(1)
    );
    let director = lab.start_director(&lab.nat_config("rr", Some(BACKEND_PORT)));

    let results = lab.http_get_many(REQUESTS, &vip_url());
    assert_all_ok(&results, "HTTP through NAT");
    let served = tally(&results);
    println!("nat: requests per real server: {served:?}");
    for i in 1..=3 {
        assert_eq!(
            served.get(&rs_name(i)).copied(),
            Some(REQUESTS / 3),
            "rr over 3 servers: {served:?}"
        );
    }
    for response in results.iter().flatten() {
        // Port mapping: VIP:80 reached the real server on 8080; and the real server saw the
        // client's own address (NAT rewrites the destination only).
        assert_eq!(response.port, BACKEND_PORT, "{response:?}");
        assert_eq!(response.client_ip(), CLIENT_IP, "{response:?}");
    }

    let stats = director.settled_stats(REQUESTS as u64);
    let drops = director_lab::stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
    // Replies came back through the director: counted out per backend.
    for backend in director_lab::stats::backends(&stats) {
        assert!(backend.packets_out > 0, "{backend:?}");
        assert!(backend.packets_in > 0, "{backend:?}");
    }
    assert_eq!(stats["xdp"]["no_socket"].as_u64(), Some(0), "{stats:#}");
    assert_eq!(
        kernel_forwarding(&lab),
        "0",
        "the director turned forwarding on"
    );
}

#[test]
fn nat_translates_a_real_servers_icmp_error_for_the_client() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::servers(1)
    });
    // A UDP service mapped to a port nothing listens on: the real server's kernel answers
    // port-unreachable about (client -> rs:9999), which only reaches the client as an error
    // about (client -> VIP:5353) if the director translates the ICMP error and its quote.
    let mut config = lab.nat_config("rr", Some(9999));
    let service = &mut config.services[0];
    service.protocol = "udp".into();
    service.ports = vec![5353];
    let director = lab.start_director(&config);

    let probe = "import socket,sys\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 s.settimeout(3)\n\
                 s.connect((sys.argv[1],5353))\n\
                 s.send(b'x')\n\
                 try:\n    s.recv(100)\n    print('answer')\n\
                 except ConnectionRefusedError:\n    print('refused')\n\
                 except socket.timeout:\n    print('timeout')\n";
    let out = lab.exec_ok(Host::Client, &["python3", "-c", probe, VIP]);
    assert_eq!(
        out.trim(),
        "refused",
        "the client's UDP socket should see the translated port-unreachable; director log:\n{}",
        director.log()
    );
    let stats = director.stats();
    assert!(
        stats["xdp"]["icmp_redirected"].as_u64().unwrap_or(0) > 0,
        "the server side's classifier did not steer the ICMP error: {stats:#}"
    );
    let drops = director_lab::stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
}

/// The client side's view of a UDP exchange through the director, then a fragmentation-needed
/// (MTU 1200) about the director's reply, as a router between the director and the client
/// would send it: to the VIP, quoting the reply (VIP:5353 -> client). Prints the reply, then
/// the client's port.
const UDP_THEN_FRAG_NEEDED_PY: &str = r"
import socket, struct, sys
vip, client = sys.argv[1], sys.argv[2]

def checksum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(3)
udp.connect((vip, 5353))
udp.send(b'ping')
print(udp.recv(100).decode())
port = udp.getsockname()[1]
quoted = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1400, 1, 0x4000, 63, 17, 0,
                     socket.inet_aton(vip), socket.inet_aton(client))
quoted = quoted[:10] + struct.pack('!H', checksum(quoted)) + quoted[12:]
quoted += struct.pack('!HHHH', 5353, port, 1380, 0)
icmp = struct.pack('!BBHHH', 3, 4, 0, 0, 1200) + quoted
icmp = icmp[:2] + struct.pack('!H', checksum(icmp)) + icmp[4:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.sendto(icmp, (vip, 0))
print(port)
";

/// A UDP echo server on port 9999 that answers `pong`.
const UDP_ECHO_PY: &str = r"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(b'pong', peer)
";

#[test]
fn nat_forwards_udp_and_a_fragmentation_needed_reaches_the_real_server() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::servers(1)
    });
    let _echo = lab.spawn(Host::Rs(1), &["python3", "-c", UDP_ECHO_PY]);
    poll_until(
        "the UDP echo server to bind",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let sockets = lab.exec_ok(Host::Rs(1), &["ss", "-Hunl", "sport = :9999"]);
            if sockets.contains(":9999") {
                Ok(())
            } else {
                Err(sockets)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut config = lab.nat_config("rr", Some(9999));
    let service = &mut config.services[0];
    service.protocol = "udp".into();
    service.ports = vec![5353];
    let director = lab.start_director(&config);

    let out = lab.exec_ok(
        Host::Client,
        &["python3", "-c", UDP_THEN_FRAG_NEEDED_PY, VIP, CLIENT_IP],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pong"), "{out}");
    assert!(
        lines
            .next()
            .and_then(|port| port.parse::<u16>().ok())
            .is_some(),
        "{out}"
    );
    // Translated to quote (rs:9999 -> client) and sent to the real server, the error makes its
    // kernel lower the path MTU toward the client, as it would without the director between.
    poll_until(
        "the real server to learn the path MTU 1200 toward the client",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let route = lab.exec_ok(Host::Rs(1), &["ip", "route", "get", CLIENT_IP]);
            if route.contains("mtu 1200") {
                Ok(())
            } else {
                Err(route)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}; director log:\n{}", director.log()));
    let stats = director.stats();
    let drops = director_lab::stats::worker_drops(&stats);
    assert!(drops.values().all(|&n| n == 0), "worker drops: {drops:?}");
}

#[test]
fn nat_reload_adds_and_removes_real_servers_replies_included() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::default()
    });
    let mut config = lab.nat_config("rr", Some(BACKEND_PORT));
    let all = config.services[0].backends.clone();
    config.services[0].backends.truncate(2);
    let director = lab.start_director(&config);
    let served = tally(&lab.http_get_many(20, &vip_url()));
    assert_eq!(served.get(&rs_name(3)), None, "{served:?}");

    // rs3's replies only come back if the reload also told the server side's classifier.
    config.services[0].backends.clone_from(&all);
    director.replace_config(&config);
    director.reload().assert_ok();
    let results = lab.http_get_many(30, &vip_url());
    assert_all_ok(&results, "HTTP through NAT after adding rs3");
    let served = tally(&results);
    // A third exactly, even when the client reuses a source port of the first 20 requests: a
    // SYN on a closing entry is a new connection for the scheduler, not the old one's server's.
    let sequence: Vec<String> = results
        .iter()
        .flatten()
        .map(|response| format!("{} {}", response.client, response.server))
        .collect();
    assert_eq!(
        served.get(&rs_name(3)).copied(),
        Some(10),
        "{served:?}: {sequence:?}"
    );

    // Removed again: no request reaches it, and none fails.
    config.services[0].backends.truncate(2);
    director.replace_config(&config);
    director.reload().assert_ok();
    let results = lab.http_get_many(20, &vip_url());
    assert_all_ok(&results, "HTTP through NAT after removing rs3");
    assert_eq!(tally(&results).get(&rs_name(3)), None);
}

#[test]
fn nat_client_reusing_its_source_port_is_scheduled_afresh() {
    require_root!();
    let lab = Lab::nat(LabOptions {
        ports: vec![BACKEND_PORT],
        ..LabOptions::default()
    });
    let mut config = lab.nat_config("rr", Some(BACKEND_PORT));
    config.services[0].backends.truncate(2);
    let director = lab.start_director(&config);

    // Four connections in turn from one source port, each closed before the next opens: each
    // is a new connection for round robin, not the previous one's, and its replies come back.
    let results = lab.http_get(&GetOptions::new(4, &vip_url()).from_port(REUSED_PORT));
    assert_all_ok(&results, "HTTP through NAT from one reused source port");
    let seen: Vec<(String, String)> = results
        .iter()
        .flatten()
        .map(|response| (response.client.clone(), response.server.clone()))
        .collect();
    let client = format!("{CLIENT_IP}:{REUSED_PORT}");
    assert!(seen.iter().all(|(from, _)| *from == client), "{seen:?}");
    let servers: Vec<&str> = seen.iter().map(|(_, server)| server.as_str()).collect();
    assert!(
        servers.windows(2).all(|pair| pair[0] != pair[1]),
        "round robin over two servers alternates: {servers:?}"
    );
    let stats = director.stats();
    assert_eq!(
        director_lab::stats::worker_counter(&stats, "connections_reopened"),
        3,
        "{stats}"
    );
    assert_eq!(
        director_lab::stats::worker_counter(&stats, "connections_created"),
        1
    );
}
