//! Director configuration files for the lab, written as TOML by hand (the lab depends on no TOML
//! crate, and the text it writes is what a person would write).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{VIP, VIP_PORT};

/// `[director]` plus services.
#[derive(Clone, Debug)]
pub struct DirectorConfig {
    /// Interfaces the director serves.
    pub interfaces: Vec<String>,
    /// Worker threads.
    pub workers: u32,
    /// `poll = "busy" | "adaptive"`; left out when `None`.
    pub poll: Option<String>,
    /// `worker_cpus`; left out when empty.
    pub worker_cpus: Vec<usize>,
    /// Stats socket path.
    pub stats_socket: PathBuf,
    /// Virtual services.
    pub services: Vec<ServiceConfig>,
}

/// One `[[service]]`.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Name.
    pub name: String,
    /// Virtual IP.
    pub vip: String,
    /// Ports: one is written `port = 80`, several `ports = [80, 443]` (a service group: one
    /// scheduler, shared persistence).
    pub ports: Vec<u16>,
    /// "tcp" or "udp".
    pub protocol: String,
    /// "maglev", "rr", "wlc"... or whatever a test wants rejected.
    pub scheduler: String,
    /// `persistence = "300s"`; left out when `None`.
    pub persistence: Option<String>,
    /// `persistence_netmask = "255.255.255.0"`; left out when `None`.
    pub persistence_netmask: Option<String>,
    /// "dr".
    pub forwarding: String,
    /// `fallback = "192.0.2.13:80"` (the sorry server); left out when `None`.
    pub fallback: Option<String>,
    /// `[service.health_check]`; left out when `None`.
    pub health_check: Option<HealthCheck>,
    /// Real servers.
    pub backends: Vec<BackendConfig>,
}

/// `[service.health_check]`: `kind` and whichever other keys are set, as written.
#[derive(Clone, Debug, Default)]
pub struct HealthCheck {
    /// "tcp", "http", "send_expect" or "exec".
    pub kind: String,
    /// `interval = "300ms"`.
    pub interval: Option<String>,
    /// `timeout = "200ms"`.
    pub timeout: Option<String>,
    /// `rise = 2`.
    pub rise: Option<u32>,
    /// `fall = 3`.
    pub fall: Option<u32>,
    /// `port = 8080`.
    pub port: Option<u16>,
    /// "remove" or "inhibit".
    pub on_failure: Option<String>,
    /// `path = "/healthz"` (http).
    pub path: Option<String>,
    /// `expect_status = 200` (http).
    pub expect_status: Option<u16>,
    /// `expect_body = "ok"` (http).
    pub expect_body: Option<String>,
    /// `send = "..."` (send_expect).
    pub send: Option<String>,
    /// `expect = "..."` (send_expect).
    pub expect: Option<String>,
    /// `command = ["/path", "{address}"]` (exec).
    pub command: Option<Vec<String>>,
}

impl HealthCheck {
    /// A check of `kind` with every other key left out.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            ..Self::default()
        }
    }

    /// Sets `interval`, `timeout`, `rise` and `fall`.
    #[must_use]
    pub fn timing(mut self, interval: &str, timeout: &str, rise: u32, fall: u32) -> Self {
        self.interval = Some(interval.into());
        self.timeout = Some(timeout.into());
        self.rise = Some(rise);
        self.fall = Some(fall);
        self
    }

    /// The table's lines, `[service.health_check]` first.
    fn write(&self, s: &mut String) {
        s.push_str("\n[service.health_check]\n");
        let _ = writeln!(s, "kind = {}", quote(&self.kind));
        let strings = [
            ("interval", &self.interval),
            ("timeout", &self.timeout),
            ("on_failure", &self.on_failure),
            ("path", &self.path),
            ("expect_body", &self.expect_body),
            ("send", &self.send),
            ("expect", &self.expect),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                let _ = writeln!(s, "{key} = {}", quote(value));
            }
        }
        let numbers = [
            ("rise", self.rise),
            ("fall", self.fall),
            ("port", self.port.map(u32::from)),
            ("expect_status", self.expect_status.map(u32::from)),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                let _ = writeln!(s, "{key} = {value}");
            }
        }
        if let Some(command) = &self.command {
            let words: Vec<String> = command.iter().map(|word| quote(word)).collect();
            let _ = writeln!(s, "command = [{}]", words.join(", "));
        }
    }
}

/// One `[[service.backend]]`.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Address.
    pub address: String,
    /// Weight; left out of the file when `None`.
    pub weight: Option<u32>,
    /// NAT port mapping (`port = 8080`); left out when `None`.
    pub port: Option<u16>,
}

impl ServiceConfig {
    /// The backend at `address`; panics if there is none.
    pub fn backend_mut(&mut self, address: &str) -> &mut BackendConfig {
        let name = self.name.clone();
        self.backends
            .iter_mut()
            .find(|b| b.address == address)
            .unwrap_or_else(|| panic!("service {name} has no backend {address}"))
    }

    /// Sets the weights of the backends, in order (`weights[0]` for the first backend...).
    pub fn set_weights(&mut self, weights: &[u32]) {
        assert_eq!(
            weights.len(),
            self.backends.len(),
            "one weight per backend of {}",
            self.name
        );
        for (backend, &weight) in self.backends.iter_mut().zip(weights) {
            backend.weight = Some(weight);
        }
    }
}

impl DirectorConfig {
    /// `eth0`, one worker, one DR service "web" on VIP 192.0.2.10:80/tcp over `backends`.
    pub fn dr(stats_socket: PathBuf, scheduler: &str, backends: &[String]) -> Self {
        Self {
            interfaces: vec!["eth0".into()],
            workers: 1,
            poll: None,
            worker_cpus: Vec::new(),
            stats_socket,
            services: vec![ServiceConfig {
                name: "web".into(),
                vip: VIP.into(),
                ports: vec![VIP_PORT],
                protocol: "tcp".into(),
                scheduler: scheduler.into(),
                persistence: None,
                persistence_netmask: None,
                forwarding: "dr".into(),
                fallback: None,
                health_check: None,
                backends: backends
                    .iter()
                    .map(|a| BackendConfig {
                        address: a.clone(),
                        weight: None,
                        port: None,
                    })
                    .collect(),
            }],
        }
    }

    /// `eth0` (client side) and `eth1` (server side), one worker, one NAT service "web" on VIP
    /// 192.0.2.10:80/tcp over `backends`, each mapped to `backend_port` when given.
    pub fn nat(
        stats_socket: PathBuf,
        scheduler: &str,
        backends: &[String],
        backend_port: Option<u16>,
    ) -> Self {
        let mut config = Self::dr(stats_socket, scheduler, backends);
        config.interfaces.push("eth1".into());
        let service = &mut config.services[0];
        service.forwarding = "nat".into();
        for backend in &mut service.backends {
            backend.port = backend_port;
        }
        config
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::from("[director]\n");
        let interfaces: Vec<String> = self.interfaces.iter().map(|i| quote(i)).collect();
        let _ = writeln!(s, "interfaces = [{}]", interfaces.join(", "));
        let _ = writeln!(s, "workers = {}", self.workers);
        if let Some(poll) = &self.poll {
            let _ = writeln!(s, "poll = {}", quote(poll));
        }
        if !self.worker_cpus.is_empty() {
            let cpus: Vec<String> = self.worker_cpus.iter().map(usize::to_string).collect();
            let _ = writeln!(s, "worker_cpus = [{}]", cpus.join(", "));
        }
        let _ = writeln!(
            s,
            "stats_socket = {}",
            quote(&self.stats_socket.to_string_lossy())
        );
        for service in &self.services {
            s.push_str("\n[[service]]\n");
            let _ = writeln!(s, "name = {}", quote(&service.name));
            let _ = writeln!(s, "vip = {}", quote(&service.vip));
            if let [port] = service.ports[..] {
                let _ = writeln!(s, "port = {port}");
            } else {
                let ports: Vec<String> = service.ports.iter().map(u16::to_string).collect();
                let _ = writeln!(s, "ports = [{}]", ports.join(", "));
            }
            let _ = writeln!(s, "protocol = {}", quote(&service.protocol));
            let _ = writeln!(s, "scheduler = {}", quote(&service.scheduler));
            if let Some(persistence) = &service.persistence {
                let _ = writeln!(s, "persistence = {}", quote(persistence));
            }
            if let Some(netmask) = &service.persistence_netmask {
                let _ = writeln!(s, "persistence_netmask = {}", quote(netmask));
            }
            let _ = writeln!(s, "forwarding = {}", quote(&service.forwarding));
            if let Some(fallback) = &service.fallback {
                let _ = writeln!(s, "fallback = {}", quote(fallback));
            }
            if let Some(check) = &service.health_check {
                check.write(&mut s);
            }
            for backend in &service.backends {
                s.push_str("\n[[service.backend]]\n");
                let _ = writeln!(s, "address = {}", quote(&backend.address));
                if let Some(weight) = backend.weight {
                    let _ = writeln!(s, "weight = {weight}");
                }
                if let Some(port) = backend.port {
                    let _ = writeln!(s, "port = {port}");
                }
            }
        }
        s
    }
}

/// Replaces (or adds) `stats_socket` in the `[director]` table of a config text, so a checked-in
/// config can run in a lab without colliding with another director's socket.
pub fn with_stats_socket(text: &str, socket: &str) -> String {
    let mut out = String::new();
    let mut table = String::new();
    let mut done = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if table == "[director]" && !done {
                let _ = writeln!(out, "stats_socket = {}", quote(socket));
                done = true;
            }
            trimmed
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .clone_into(&mut table);
        } else if table == "[director]" && trimmed.starts_with("stats_socket") {
            let _ = writeln!(out, "stats_socket = {}", quote(socket));
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        if table == "[director]" {
            let _ = writeln!(out, "stats_socket = {}", quote(socket));
        } else {
            out = format!("[director]\nstats_socket = {}\n\n{out}", quote(socket));
        }
    }
    out
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_documented_shape() {
        let cfg = DirectorConfig::dr(
            "/run/director/x.sock".into(),
            "maglev",
            &["192.0.2.11".into()],
        );
        let text = cfg.to_toml();
        assert!(text.starts_with("[director]\ninterfaces = [\"eth0\"]\nworkers = 1\n"));
        assert!(text.contains("stats_socket = \"/run/director/x.sock\"\n"));
        assert!(text.contains("[[service]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\n"));
        assert!(text.contains("scheduler = \"maglev\"\nforwarding = \"dr\"\n"));
        assert!(text.contains("[[service.backend]]\naddress = \"192.0.2.11\"\n"));
        assert!(!text.contains("persistence"));
    }

    #[test]
    fn writes_nat_with_port_mapping() {
        let cfg = DirectorConfig::nat(
            "/run/director/x.sock".into(),
            "rr",
            &["198.51.100.11".into()],
            Some(8080),
        );
        let text = cfg.to_toml();
        assert!(text.starts_with("[director]\ninterfaces = [\"eth0\", \"eth1\"]\n"));
        assert!(text.contains("forwarding = \"nat\"\n"));
        assert!(text.contains("address = \"198.51.100.11\"\nport = 8080\n"));
    }

    #[test]
    fn writes_port_groups_persistence_and_weights() {
        let mut cfg = DirectorConfig::dr(
            "/run/director/x.sock".into(),
            "wrr",
            &["192.0.2.11".into(), "192.0.2.12".into()],
        );
        let service = &mut cfg.services[0];
        service.ports = vec![80, 443];
        service.persistence = Some("300s".into());
        service.persistence_netmask = Some("255.255.255.0".into());
        service.set_weights(&[3, 0]);
        let text = cfg.to_toml();
        assert!(text.contains("ports = [80, 443]\nprotocol = \"tcp\"\nscheduler = \"wrr\"\n"));
        assert!(!text.contains("port = "));
        assert!(text.contains("persistence = \"300s\"\npersistence_netmask = \"255.255.255.0\"\n"));
        assert!(text.contains("address = \"192.0.2.11\"\nweight = 3\n"));
        assert!(text.contains("address = \"192.0.2.12\"\nweight = 0\n"));
    }

    #[test]
    fn writes_health_checks_and_fallbacks() {
        let mut cfg =
            DirectorConfig::dr("/run/director/x.sock".into(), "rr", &["192.0.2.11".into()]);
        let service = &mut cfg.services[0];
        service.fallback = Some("192.0.2.13:80".into());
        service.health_check = Some(HealthCheck {
            path: Some("/healthz".into()),
            expect_body: Some("ok".into()),
            expect_status: Some(200),
            ..HealthCheck::new("http").timing("300ms", "200ms", 2, 3)
        });
        let text = cfg.to_toml();
        assert!(
            text.contains(
                "forwarding = \"dr\"\nfallback = \"192.0.2.13:80\"\n\n[service.health_check]\n\
                 kind = \"http\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\npath = \"/healthz\"\n\
                 expect_body = \"ok\"\nrise = 2\nfall = 3\nexpect_status = 200\n\n[[service.backend]]\n"
            ),
            "{text}"
        );
        cfg.services[0].health_check = Some(HealthCheck {
            send: Some("GET / HTTP/1.0\r\n\r\n".into()),
            command: Some(vec!["/bin/true".into(), "{address}".into()]),
            ..HealthCheck::new("exec")
        });
        let text = cfg.to_toml();
        assert!(
            text.contains("send = \"GET / HTTP/1.0\\u000D\\u000A\\u000D\\u000A\"\n"),
            "{text}"
        );
        assert!(
            text.contains("command = [\"/bin/true\", \"{address}\"]\n"),
            "{text}"
        );
    }

    #[test]
    fn overrides_stats_socket_in_the_director_table_only() {
        let text = "[director]\ninterfaces = [\"eth0\"]\nstats_socket = \"/run/a.sock\"\n\n[[service]]\nname = \"web\"\n";
        let out = with_stats_socket(text, "/run/b.sock");
        assert!(out.contains("stats_socket = \"/run/b.sock\"\n"));
        assert!(!out.contains("/run/a.sock"));

        let text = "[director]\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\n";
        let out = with_stats_socket(text, "/run/b.sock");
        let director = out.split("[[service]]").next().unwrap();
        assert!(director.contains("stats_socket = \"/run/b.sock\""));

        let out = with_stats_socket("[director]\nworkers = 1", "/s");
        assert_eq!(out, "[director]\nworkers = 1\nstats_socket = \"/s\"\n");
    }
}
