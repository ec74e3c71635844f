//! Runs K frames of one case through `Pipeline::process`, for counting instructions per frame
//! under `valgrind --tool=callgrind` (`benches/callgrind.sh` runs it at two values of K and
//! divides the difference, so set-up cost cancels out). The cases are the criterion pipeline
//! bench's, on the same golden-fixture frames:
//!
//! ```text
//! pipeline_ir CASE K
//!   copy             the per-frame template copy alone (what every other case includes)
//!   dr-established   a TCP ACK of a tracked flow: parse, lookup, DR rewrite, counters
//!   dr-new-flow      a SYN of a new flow into a full table: miss, Maglev, evict + insert
//!   nat-established  a client frame of a tracked NAT flow: rewrite to RS:8080, checksums
//!   nat-reply        the real server's reply: reply index, rewrite back to VIP:80
//!   tun-established  a frame of a tracked TUN flow: encapsulated into the headroom
//!   drop-fragment    a fragment, classified and dropped with its counter
//!   nat-established-fib, nat-reply-fib, tun-established-fib
//!                    the same three with next hops from a FIB: NAT replies to the client's
//!                    last hop, TUN to the route's gateway (one atomic load per frame)
//!   nat-reply-route  the reply with `nat_reply = "route"`: the neighbour the route gave
//!   dr6-established, nat6-established, nat6-reply, tun6-established
//!                    the same over IPv6: [2001:db8::10]:80 to 2001:db8:1::11-13 (NAT :8080)
//! ```

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use dataplane::fib::{FibBuilder, Neighbour, NeighbourId, Neighbours, NextHop, Route};
use dataplane::testing::{
    backend, backend_mac, counter_blocks, in_chunk, interfaces, service, table, with_forwarding,
    with_port, FrameBuilder, Ipv6FrameBuilder, DIRECTOR_MAC, UMEM_HEADROOM,
};
use dataplane::{
    Forwarding, NatReply, Pipeline, Protocol, Routing, ServiceTable, Verdict, WorkerCounters,
};
use scheduler::Algorithm;

const CASES: [&str; 15] = [
    "copy",
    "dr-established",
    "dr-new-flow",
    "nat-established",
    "nat-reply",
    "tun-established",
    "drop-fragment",
    "nat-established-fib",
    "nat-reply-fib",
    "nat-reply-route",
    "tun-established-fib",
    "dr6-established",
    "nat6-established",
    "nat6-reply",
    "tun6-established",
];
const CLIENT: &str = "203.0.113.7:40000";
const CLIENT6: &str = "[2001:db8:c::7]:40000";
const VIP6: &str = "[2001:db8::10]:80";

/// One service of three real servers on VIP 192.0.2.10:80 forwarded by `forwarding` (NAT maps
/// port 80 to 8080), with the fixture interfaces. `routed`: as control publishes it with a FIB,
/// TUN servers without a MAC of their own (a configured one would override the route).
fn table_for(forwarding: Forwarding, routed: bool) -> ServiceTable {
    let backends = (1..=3)
        .map(|n| {
            let server = backend(
                &format!("198.51.100.{}", 10 + n),
                (!(routed && forwarding == Forwarding::Tunnel)).then(|| backend_mac(n)),
                1,
                usize::from(n - 1),
            );
            if forwarding == Forwarding::Nat {
                with_port(server, 8080)
            } else {
                server
            }
        })
        .collect();
    table(
        1,
        vec![with_forwarding(
            service("192.0.2.10:80", Protocol::Tcp, Algorithm::Maglev, backends),
            forwarding,
        )],
        counter_blocks(1, 3),
    )
    .with_interfaces(interfaces(1500))
}

/// [`table_for`] over IPv6: [2001:db8::10]:80 to 2001:db8:1::11, ::12 and ::13.
fn table6_for(forwarding: Forwarding) -> ServiceTable {
    let backends = (1..=3)
        .map(|n| {
            let server = backend(
                &format!("2001:db8:1::{}", 10 + n),
                Some(backend_mac(n)),
                1,
                usize::from(n - 1),
            );
            if forwarding == Forwarding::Nat {
                with_port(server, 8080)
            } else {
                server
            }
        })
        .collect();
    table(
        1,
        vec![with_forwarding(
            service(VIP6, Protocol::Tcp, Algorithm::Maglev, backends),
            forwarding,
        )],
        counter_blocks(1, 3),
    )
    .with_interfaces(interfaces(1500))
}

/// [`client_ack`] over IPv6.
fn client_ack6() -> Vec<u8> {
    Ipv6FrameBuilder::tcp()
        .src(CLIENT6)
        .dst(VIP6)
        .ack()
        .payload(&[0; 64])
        .build()
}

/// Next hops from a FIB: the real servers' 198.51.100.0/24 and the client's 203.0.113.0/24
/// each via a gateway on interface 1, both resolved; NAT replies by `nat_reply`.
fn routing(nat_reply: NatReply) -> Routing {
    let neighbours = Neighbours::with_capacity(4);
    let mut fib = FibBuilder::new();
    for (slot, prefix) in [(0u32, [198, 51, 100, 0]), (1, [203, 0, 113, 0])] {
        let neighbour = NeighbourId::new(slot, 0);
        neighbours.publish(
            neighbour,
            Neighbour::Resolved([2, 0xaa, 0, 0, 0, slot as u8]),
        );
        let route = fib
            .add_route(&Route::Forward(vec![NextHop {
                address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250 + slot as u8)),
                neighbour,
                ifindex: 1,
                weight: 1,
            }]))
            .expect("a valid route");
        fib.add_v4(Ipv4Addr::from(prefix), 24, route)
            .expect("a valid prefix");
    }
    Routing {
        fib: Arc::new(fib.build()),
        neighbours: Arc::new(neighbours),
        client_ifindex: 1,
        nat_reply,
        epoch: 0,
    }
}

/// The client's TCP ACK with 64 bytes of payload, as the criterion bench sends.
fn client_ack() -> Vec<u8> {
    FrameBuilder::tcp()
        .src(CLIENT)
        .dst("192.0.2.10:80")
        .ack()
        .payload(&[0; 64])
        .build()
}

/// Everything one case needs: the pipeline, its table and counters, and the frames it cycles.
struct Case {
    pipeline: Pipeline,
    table: ServiceTable,
    counters: WorkerCounters,
    frames: Vec<Vec<u8>>,
    /// Only copy the frame, do not process it.
    copy_only: bool,
}

impl Case {
    fn new(name: &str) -> Option<Case> {
        if let Some(base) = name
            .strip_suffix("6-established")
            .or(name.strip_suffix("6-reply"))
        {
            return Self::new6(base, name.ends_with("reply"));
        }
        let counters = WorkerCounters::default();
        let (name, routed) = match name {
            "nat-reply-route" => ("nat-reply", Some(NatReply::Route)),
            _ => match name.strip_suffix("-fib") {
                Some(base) => (base, Some(NatReply::LastHop)),
                None => (name, None),
            },
        };
        let forwarding = match name {
            "nat-established" | "nat-reply" => Forwarding::Nat,
            "tun-established" => Forwarding::Tunnel,
            _ => Forwarding::DirectRouting,
        };
        let table = match routed {
            Some(nat_reply) => table_for(forwarding, true).with_routing(routing(nat_reply)),
            None => table_for(forwarding, false),
        };
        let capacity = if name == "dr-new-flow" { 4096 } else { 1 << 16 };
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, capacity);
        let frames = match name {
            "copy" | "dr-established" | "nat-established" | "tun-established" => {
                vec![client_ack()]
            }
            "nat-reply" => {
                // Open the flow, then read which real server it got from the rewritten frame.
                let syn = FrameBuilder::tcp()
                    .src(CLIENT)
                    .dst("192.0.2.10:80")
                    .syn()
                    .build();
                let mut chunk = in_chunk(&syn);
                let verdict = pipeline.process(
                    &mut chunk,
                    UMEM_HEADROOM,
                    syn.len(),
                    &table,
                    Instant::now(),
                    &counters,
                );
                let Verdict::Tx { start, .. } = verdict else {
                    panic!("the SYN was not forwarded: {verdict:?}");
                };
                let server = &chunk[start + 30..start + 34];
                let server = format!("{}.{}.{}.{}", server[0], server[1], server[2], server[3]);
                vec![FrameBuilder::tcp()
                    .src(&format!("{server}:8080"))
                    .dst(CLIENT)
                    .ack()
                    .payload(&[0; 64])
                    .build()]
            }
            "dr-new-flow" => (0..8192u32)
                .map(|n| {
                    let source = format!(
                        "198.51.{}.{}:{}",
                        100 + (n >> 14),
                        (n >> 6) & 0xff,
                        1024 + (n & 0x3f)
                    );
                    FrameBuilder::tcp()
                        .src(&source)
                        .dst("192.0.2.10:80")
                        .syn()
                        .build()
                })
                .collect(),
            "drop-fragment" => vec![FrameBuilder::tcp()
                .src(CLIENT)
                .dst("192.0.2.10:80")
                .more_fragments()
                .build()],
            _ => return None,
        };
        Some(Case {
            pipeline,
            table,
            counters,
            frames,
            copy_only: name == "copy",
        })
    }

    /// The IPv6 cases: `base` is `dr` or `nat`; `reply`: the NAT real server's reply.
    fn new6(base: &str, reply: bool) -> Option<Case> {
        let counters = WorkerCounters::default();
        let forwarding = match base {
            "dr" if !reply => Forwarding::DirectRouting,
            "nat" => Forwarding::Nat,
            "tun" if !reply => Forwarding::Tunnel,
            _ => return None,
        };
        let table = table6_for(forwarding);
        let mut pipeline = Pipeline::new(0, DIRECTOR_MAC, 1 << 16);
        let frames = if reply {
            let syn = Ipv6FrameBuilder::tcp().src(CLIENT6).dst(VIP6).syn().build();
            let mut chunk = in_chunk(&syn);
            let verdict = pipeline.process(
                &mut chunk,
                UMEM_HEADROOM,
                syn.len(),
                &table,
                Instant::now(),
                &counters,
            );
            let Verdict::Tx { start, .. } = verdict else {
                panic!("the SYN was not forwarded: {verdict:?}");
            };
            // The destination address: after Ethernet (14) and 24 bytes of the IPv6 header.
            let octets: [u8; 16] = chunk[start + 38..start + 54].try_into().unwrap();
            let server = Ipv6Addr::from(octets);
            vec![Ipv6FrameBuilder::tcp()
                .src(&format!("[{server}]:8080"))
                .dst(CLIENT6)
                .ack()
                .payload(&[0; 64])
                .build()]
        } else {
            vec![client_ack6()]
        };
        Some(Case {
            pipeline,
            table,
            counters,
            frames,
            copy_only: false,
        })
    }

    /// Processes `count` frames, cycling through the case's frames, as a worker would: each
    /// written into the chunk's frame slot, then processed in place.
    fn run(&mut self, count: u64) -> u64 {
        let mut chunk = in_chunk(&self.frames[0]);
        let now = Instant::now();
        let mut forwarded = 0;
        let mut next = 0;
        for _ in 0..count {
            let frame = &self.frames[next];
            next = (next + 1) % self.frames.len();
            chunk[UMEM_HEADROOM..UMEM_HEADROOM + frame.len()].copy_from_slice(frame);
            if self.copy_only {
                black_box(&mut chunk);
                continue;
            }
            let verdict = self.pipeline.process(
                black_box(&mut chunk),
                UMEM_HEADROOM,
                frame.len(),
                &self.table,
                now,
                &self.counters,
            );
            if matches!(black_box(verdict), Verdict::Tx { .. }) {
                forwarded += 1;
            }
        }
        forwarded
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(Ok(count))) = (args.get(1), args.get(2).map(|k| k.parse::<u64>())) else {
        eprintln!("usage: pipeline_ir CASE K\ncases: {}", CASES.join(" "));
        return ExitCode::FAILURE;
    };
    let Some(mut case) = Case::new(name) else {
        eprintln!("unknown case {name:?}; cases: {}", CASES.join(" "));
        return ExitCode::FAILURE;
    };
    // Warm up: the flow is tracked (a provisional entry, then established) before counting.
    case.run(4);
    let forwarded = case.run(count);
    println!("{name}: {count} frames, {forwarded} forwarded");
    ExitCode::SUCCESS
}
