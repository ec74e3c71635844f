//! The one-line summaries `director check` prints for a service and for `[ha]`.
//!
//! Formatting only: everything summarised was validated already.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{format_mac, BackendConfig, HaConfig, OnFailure, ServiceConfig};
use crate::duration::format_duration;

impl HaConfig {
    /// One line for `director check`, e.g.
    /// `ha: VRRPv3 vrid 51 priority 150 on eth0, every 100ms to 224.0.0.18, preempt`.
    pub fn summary(&self) -> String {
        let peers: Vec<String> = self.unicast_peers.iter().map(Ipv4Addr::to_string).collect();
        let destination = if peers.is_empty() {
            "224.0.0.18".to_owned()
        } else {
            peers.join(", ")
        };
        format!(
            "ha: VRRPv3 vrid {} priority {} on {}, every {} to {destination}, {}",
            self.vrid,
            self.priority,
            self.interface,
            format_duration(self.advert_interval),
            match (self.preempt, self.preempt_delay.is_zero()) {
                (false, _) => "nopreempt".to_owned(),
                (true, true) => "preempt".to_owned(),
                (true, false) => format!("preempt after {}", format_duration(self.preempt_delay)),
            }
        ) + &if self.sync {
            let authenticated = if self.sync_key.is_some() {
                ", authenticated"
            } else {
                ""
            };
            format!(
                ", sync id {} port {}{authenticated}",
                self.sync_id, self.sync_port
            )
        } else {
            String::new()
        }
    }
}

impl ServiceConfig {
    /// One line for `director check`, e.g.
    /// `web: tcp 192.0.2.10:80 maglev dr -> 192.0.2.11 (weight 1), 192.0.2.12 (weight 1)`;
    /// an IPv6 VIP in brackets, `web6: tcp [2001:db8::10]:80 ...`.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut line = format!(
            "{}: {} {}:{} {} {}",
            self.name,
            self.protocol.name(),
            host(self.vip),
            ports.join(","),
            self.scheduler,
            self.forwarding.name()
        );
        if let Some(timeout) = self.persistence {
            let _ = write!(line, " persistent {}", format_duration(timeout));
            if self.persistence_netmask != Ipv4Addr::BROADCAST {
                let _ = write!(line, " mask {}", self.persistence_netmask);
            }
            if self.persistence_prefix6 != 128 {
                let _ = write!(line, " prefix6 /{}", self.persistence_prefix6);
            }
        }
        line.push_str(" ->");
        for (position, backend) in self.backends.iter().enumerate() {
            let separator = if position == 0 { " " } else { ", " };
            let _ = write!(line, "{separator}{}", server(backend));
            let _ = write!(line, " (weight {}", backend.weight);
            if let Some(mac) = backend.mac {
                let _ = write!(line, ", mac {}", format_mac(mac));
            }
            line.push(')');
        }
        if let Some(fallback) = &self.fallback {
            let _ = write!(line, "; fallback {}", server(fallback));
        }
        if let Some(check) = &self.health_check {
            let _ = write!(
                line,
                "; {} check every {}, timeout {}, rise {}, fall {}, {} on failure",
                check.kind.name(),
                format_duration(check.interval),
                format_duration(check.timeout),
                check.rise,
                check.fall,
                match check.on_failure {
                    OnFailure::Remove => "remove",
                    OnFailure::Inhibit => "inhibit",
                }
            );
        }
        line
    }
}

/// An address as it goes before `:port`: IPv6 in brackets (RFC 5952 6).
fn host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(address) => address.to_string(),
        IpAddr::V6(address) => format!("[{address}]"),
    }
}

/// A real server with its NAT port, if any: `192.0.2.11:8080`, `[2001:db8::11]:8080`, or the
/// bare address.
fn server(backend: &BackendConfig) -> String {
    match backend.port {
        Some(port) => SocketAddr::new(backend.address, port).to_string(),
        None => backend.address.to_string(),
    }
}
