//! Validation of the `[director]` table and its `[director.timeouts]`: interfaces, workers and
//! their CPUs, the stats socket and its access, the metrics listener, connection-table bounds.
//!
//! Whether the interfaces and CPUs exist on this machine is not checked here, but at start-up.

use std::path::PathBuf;
use std::time::Duration;

use dataplane::worker::PollMode;
use dataplane::Timeouts;

use super::raw::{RawDirector, RawTimeouts};
use super::values::in_range;
use super::{
    ConfigError, DirectorConfig, NatReply, DEFAULT_EMBRYONIC_SHARE, DEFAULT_MAX_CONNECTIONS,
    MAX_CPU, MAX_INTERFACE_NAME, MAX_MAX_CONNECTIONS, MAX_SOCKET_PATH, MAX_WORKERS,
};
use crate::duration::{format_duration, parse_duration};
use crate::stats_server::DEFAULT_SOCKET_MODE;

impl RawDirector {
    pub(super) fn validate(self) -> Result<DirectorConfig, ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::invalid(
                "director.interfaces",
                "[]",
                "expected at least one interface name, such as [\"eth0\"]",
            ));
        }
        if self.interfaces.len() > 2 {
            return Err(ConfigError::invalid(
                "director.interfaces",
                format!("[{} interfaces]", self.interfaces.len()),
                "expected one interface, or two for NAT: [\"<client side>\", \"<server side>\"]",
            ));
        }
        for (index, name) in self.interfaces.iter().enumerate() {
            let key = format!("director.interfaces[{index}]");
            if !valid_interface_name(name) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!(
                        "invalid interface name, expected 1 to {MAX_INTERFACE_NAME} bytes without \
                         '/', ':' or whitespace"
                    ),
                ));
            }
            if let Some(first) = self.interfaces[..index]
                .iter()
                .position(|other| other == name)
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!("interface listed twice, already director.interfaces[{first}]"),
                ));
            }
        }
        let workers = match self.workers {
            None => None,
            Some(workers) => Some(in_range(workers, 1, MAX_WORKERS, "director.workers")?),
        };
        let stats_socket = match self.stats_socket {
            None => PathBuf::from(director_proto::DEFAULT_SOCKET),
            Some(path) => {
                if path.is_empty() || path.len() > MAX_SOCKET_PATH || path.contains('\0') {
                    return Err(ConfigError::invalid(
                        "director.stats_socket",
                        format!("{path:?}"),
                        format!("expected a path of 1 to {MAX_SOCKET_PATH} bytes (the Unix socket limit)"),
                    ));
                }
                PathBuf::from(path)
            }
        };
        let stats_socket_mode = socket_mode(self.stats_socket_mode)?;
        let stats_socket_group = socket_group(self.stats_socket_group)?;
        let stats_socket_owner = socket_owner(self.stats_socket_owner)?;
        let metrics = metrics_address(self.metrics)?;
        let max_connections = match self.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(value) => in_range(value, 1, MAX_MAX_CONNECTIONS, "director.max_connections")?,
        };
        let embryonic_limit = embryonic_limit(self.embryonic_share, max_connections)?;
        let poll = match self.poll.as_deref() {
            None | Some("busy") => PollMode::Busy,
            Some("adaptive") => PollMode::Adaptive,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "director.poll",
                    format!("{other:?}"),
                    "expected \"busy\" (spin always) or \"adaptive\" (sleep when idle)",
                ))
            }
        };
        let worker_cpus = worker_cpus(self.worker_cpus.unwrap_or_default())?;
        let nat_reply = nat_reply(self.nat_reply.as_deref())?;
        let timeouts = self.timeouts.validate()?;
        Ok(DirectorConfig {
            interfaces: self.interfaces,
            workers,
            stats_socket,
            stats_socket_mode,
            stats_socket_group,
            stats_socket_owner,
            metrics,
            max_connections,
            embryonic_limit,
            poll,
            worker_cpus,
            timeouts,
            nat_reply,
        })
    }
}

/// `director.embryonic_share` (a fraction of `max_connections`, above 0 and at most 1) as
/// entries per worker, rounded up.
fn embryonic_limit(share: Option<f64>, max_connections: usize) -> Result<usize, ConfigError> {
    let share = share.unwrap_or(DEFAULT_EMBRYONIC_SHARE);
    if !(share > 0.0 && share <= 1.0) {
        return Err(ConfigError::invalid(
            "director.embryonic_share",
            share.to_string(),
            "expected a fraction of director.max_connections above 0 and at most 1, such as 0.5",
        ));
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "max_connections is at most 2^28, exact in an f64; the product is within 1..=it"
    )]
    let limit = (share * max_connections as f64).ceil() as usize;
    Ok(limit.clamp(1, max_connections))
}

/// `director.nat_reply`.
fn nat_reply(value: Option<&str>) -> Result<NatReply, ConfigError> {
    match value {
        None => Ok(NatReply::default()),
        Some(text) => [NatReply::LastHop, NatReply::Route]
            .into_iter()
            .find(|choice| choice.name() == text)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "director.nat_reply",
                    format!("{text:?}"),
                    "expected \"last-hop\" (to the MAC the client's request came from) or \
                     \"route\" (to the next hop of a route lookup of the client's address)",
                )
            }),
    }
}

/// `director.worker_cpus`: CPU numbers, each once. Whether this machine has them is checked
/// at start-up, against the CPUs the process may run on.
fn worker_cpus(values: Vec<i64>) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let key = format!("director.worker_cpus[{index}]");
        let cpu = in_range(value, 0, MAX_CPU, &key)?;
        if let Some(first) = cpus.iter().position(|&other| other == cpu) {
            return Err(ConfigError::invalid(
                key,
                cpu.to_string(),
                format!("CPU listed twice, already director.worker_cpus[{first}]"),
            ));
        }
        cpus.push(cpu);
    }
    Ok(cpus)
}

/// `director.stats_socket_mode`.
fn socket_mode(value: Option<String>) -> Result<u32, ConfigError> {
    Ok(match value {
        None => DEFAULT_SOCKET_MODE,
        Some(text) => u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| {
                *mode <= 0o777 && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit())
            })
            .ok_or_else(|| {
                ConfigError::invalid(
                    "director.stats_socket_mode",
                    format!("{text:?}"),
                    "expected octal permission bits as a string, such as \"0660\" or \"0666\"",
                )
            })?,
    })
}

/// `director.stats_socket_group`.
fn socket_group(value: Option<String>) -> Result<Option<String>, ConfigError> {
    account_name(value, "director.stats_socket_group", "a group name", "gid")
}

/// `director.stats_socket_owner`.
fn socket_owner(value: Option<String>) -> Result<Option<String>, ConfigError> {
    account_name(value, "director.stats_socket_owner", "a user name", "uid")
}

/// A user or group name as `/etc/passwd` and `/etc/group` spell them, or a number.
fn account_name(
    value: Option<String>,
    key: &str,
    what: &str,
    id: &str,
) -> Result<Option<String>, ConfigError> {
    Ok(match value {
        None => None,
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
            if !valid {
                return Err(ConfigError::invalid(
                    key,
                    format!("{name:?}"),
                    format!("expected {what} (1 to 32 of a-z A-Z 0-9 _ - . $) or a {id}"),
                ));
            }
            Some(name)
        }
    })
}

/// `director.metrics`.
fn metrics_address(value: Option<String>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    Ok(match value {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::invalid(
                "director.metrics",
                format!("{text:?}"),
                "expected an address and port to serve /metrics on, such as \"127.0.0.1:9100\"",
            )
        })?),
    })
}

impl RawTimeouts {
    fn validate(self) -> Result<Timeouts, ConfigError> {
        let defaults = Timeouts::default();
        let one = |value: Option<String>,
                   name: &str,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            let Some(text) = value else {
                return Ok(default);
            };
            let key = format!("director.timeouts.{name}");
            match parse_duration(&text) {
                Ok(duration) if duration.is_zero() => Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    format!(
                        "expected a duration above zero (default {:?})",
                        format_duration(default)
                    ),
                )),
                Ok(duration) => Ok(duration),
                Err(error) => Err(ConfigError::invalid(
                    key,
                    format!("{text:?}"),
                    error.to_string(),
                )),
            }
        };
        Ok(Timeouts {
            tcp_established: one(
                self.tcp_established,
                "tcp_established",
                defaults.tcp_established,
            )?,
            tcp_syn: one(self.tcp_syn, "tcp_syn", defaults.tcp_syn)?,
            tcp_fin_wait: one(self.tcp_fin_wait, "tcp_fin_wait", defaults.tcp_fin_wait)?,
            tcp_close: one(self.tcp_close, "tcp_close", defaults.tcp_close)?,
            udp: one(self.udp, "udp", defaults.udp)?,
        })
    }
}

/// The kernel's `dev_valid_name`: 1..IFNAMSIZ-1 bytes, not `.` or `..`, no `/`, `:` or whitespace.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte.is_ascii_whitespace() || byte == 0)
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::{assert_mentions, error_with, GOOD};
    use crate::config::{Config, NatReply};

    #[test]
    fn interfaces_are_checked() {
        assert_mentions(
            &error_with("[\"eth0\"]", "[]"),
            &["director.interfaces = []", "at least one"],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"eth 0\"]"),
            &[
                "director.interfaces[0] = \"eth 0\"",
                "invalid interface name",
            ],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"averyveryverylongname\"]"),
            &[
                "director.interfaces[0]",
                "\"averyveryverylongname\"",
                "1 to 15 bytes",
            ],
        );
        assert_mentions(
            &error_with("[\"eth0\"]", "[\"eth0\", \"eth0\"]"),
            &["director.interfaces[1] = \"eth0\"", "listed twice"],
        );
    }

    #[test]
    fn socket_access_and_metrics_keys() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.director.stats_socket_mode, 0o660);
        assert_eq!(config.director.stats_socket_group, None);
        assert_eq!(config.director.metrics, None);
        let text = GOOD.replacen(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nstats_socket_mode = \"0666\"\n\
             stats_socket_group = \"lbadmin\"\nstats_socket_owner = \"lbops\"\n\
             metrics = \"127.0.0.1:9100\"",
            1,
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.director.stats_socket_mode, 0o666);
        assert_eq!(
            config.director.stats_socket_group.as_deref(),
            Some("lbadmin")
        );
        assert_eq!(config.director.stats_socket_owner.as_deref(), Some("lbops"));
        assert_mentions(
            &error_with(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\"]\nstats_socket_owner = \"bad name\"",
            ),
            &["director.stats_socket_owner", "\"bad name\"", "a user name"],
        );
        assert_eq!(
            config.director.metrics,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        let with = |line: &str| {
            error_with(
                "interfaces = [\"eth0\"]",
                &format!("interfaces = [\"eth0\"]\n{line}"),
            )
        };
        for bad in ["\"0999\"", "\"1777\"", "\"\"", "\"rw\""] {
            assert_mentions(
                &with(&format!("stats_socket_mode = {bad}")),
                &["director.stats_socket_mode", "octal permission bits"],
            );
        }
        assert_mentions(
            &with("stats_socket_mode = 660"),
            &["director.stats_socket_mode", "invalid type"],
        );
        assert_mentions(
            &with("stats_socket_group = \"lb admin\""),
            &["director.stats_socket_group = \"lb admin\"", "group name"],
        );
        assert_mentions(
            &with("metrics = \"localhost\""),
            &["director.metrics = \"localhost\"", "127.0.0.1:9100"],
        );
    }

    #[test]
    fn director_numbers_are_checked() {
        let with = |line: &str| {
            error_with(
                "interfaces = [\"eth0\"]",
                &format!("interfaces = [\"eth0\"]\n{line}"),
            )
        };
        assert_mentions(
            &with("workers = 0"),
            &["director.workers = 0", "expected 1..=1024"],
        );
        assert_mentions(
            &with("workers = -2"),
            &["director.workers = -2", "expected 1..=1024"],
        );
        assert_mentions(
            &with("worker_cpus = [1, 1024]"),
            &["director.worker_cpus[1] = 1024", "expected 0..=1023"],
        );
        assert_mentions(
            &with("worker_cpus = [-1]"),
            &["director.worker_cpus[0] = -1", "expected 0..=1023"],
        );
        assert_mentions(
            &with("worker_cpus = [3, 2, 3]"),
            &[
                "director.worker_cpus[2] = 3",
                "listed twice, already director.worker_cpus[0]",
            ],
        );
        assert_mentions(
            &with("max_connections = 0"),
            &["director.max_connections = 0", "expected 1.."],
        );
        for bad in ["0", "0.0", "-0.5", "1.5", "nan", "inf"] {
            assert_mentions(
                &with(&format!("embryonic_share = {bad}")),
                &["director.embryonic_share", "above 0 and at most 1"],
            );
        }
        assert_mentions(
            &with("stats_socket = \"\""),
            &["director.stats_socket = \"\"", "Unix socket"],
        );
        let long = format!("stats_socket = \"/{}\"", "a".repeat(120));
        assert_mentions(&with(&long), &["director.stats_socket", "1 to 107 bytes"]);
    }

    #[test]
    fn nat_reply_is_checked() {
        assert_eq!(
            Config::parse(GOOD).unwrap().director.nat_reply,
            NatReply::LastHop
        );
        for (value, expected) in [("last-hop", NatReply::LastHop), ("route", NatReply::Route)] {
            let text = GOOD.replacen(
                "interfaces = [\"eth0\"]",
                &format!("interfaces = [\"eth0\"]\nnat_reply = \"{value}\""),
                1,
            );
            assert_eq!(Config::parse(&text).unwrap().director.nat_reply, expected);
        }
        assert_mentions(
            &error_with(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\"]\nnat_reply = \"gateway\"",
            ),
            &[
                "director.nat_reply = \"gateway\"",
                "expected \"last-hop\"",
                "\"route\"",
            ],
        );
    }

    #[test]
    fn timeouts_are_checked() {
        let with = |line: &str| {
            error_with(
                "[director]",
                &format!("[director.timeouts]\n{line}\n[director]"),
            )
        };
        assert_mentions(
            &with("tcp_syn = \"1 minute\""),
            &[
                "director.timeouts.tcp_syn = \"1 minute\"",
                "expected a duration such as",
            ],
        );
        assert_mentions(
            &with("udp = \"10\""),
            &["director.timeouts.udp = \"10\"", "number without a unit"],
        );
        assert_mentions(
            &with("tcp_close = \"0s\""),
            &[
                "director.timeouts.tcp_close = \"0s\"",
                "above zero",
                "default \"10s\"",
            ],
        );
        assert_mentions(
            &with("tcp_fin_wait = \"3d\""),
            &["director.timeouts.tcp_fin_wait = \"3d\"", "unknown unit"],
        );
    }
}
