//! Validation of a service's `[service.health_check]` table: the kind and its own keys (a key
//! of another kind is refused rather than ignored), timing, rise and fall, port, what failure
//! does.
//!
//! It checks the configuration only; running checks is `crate::health`'s.

use std::time::Duration;

use super::raw::RawHealthCheck;
use super::values::in_range;
use super::{
    CheckKind, ConfigError, HealthCheckConfig, OnFailure, DEFAULT_CHECK_FALL,
    DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_RISE, DEFAULT_CHECK_TIMEOUT, MAX_CHECK_INTERVAL,
    MAX_CHECK_TEXT, MAX_RISE_FALL, MIN_CHECK_INTERVAL,
};
use crate::duration::{format_duration, parse_duration};

impl RawHealthCheck {
    pub(super) fn validate(mut self, at: &str) -> Result<HealthCheckConfig, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        let kind_name = self.kind.as_str();
        // Keys that belong to another kind would silently do nothing: refuse them.
        let quoted = |text: &Option<String>| text.as_ref().map(|text| format!("{text:?}"));
        let misplaced = [
            ("path", quoted(&self.path), "http"),
            (
                "expect_status",
                self.expect_status.map(|status| status.to_string()),
                "http",
            ),
            ("expect_body", quoted(&self.expect_body), "http"),
            ("send", quoted(&self.send), "send_expect"),
            ("expect", quoted(&self.expect), "send_expect"),
            (
                "command",
                self.command.as_ref().map(|command| format!("{command:?}")),
                "exec",
            ),
        ];
        let known = ["tcp", "http", "send_expect", "exec"];
        if !known.contains(&kind_name) {
            return Err(ConfigError::invalid(
                key("kind"),
                format!("{kind_name:?}"),
                "unknown health check kind, expected tcp, http, send_expect or exec",
            ));
        }
        for (name, value, owner) in misplaced {
            if let Some(value) = value {
                if owner != kind_name {
                    return Err(ConfigError::invalid(
                        key(name),
                        value,
                        format!(
                            "only meaningful with kind = \"{owner}\" (this check is {kind_name:?}); \
                             leave it out"
                        ),
                    ));
                }
            }
        }
        let interval = check_duration(
            self.interval.take(),
            &key("interval"),
            DEFAULT_CHECK_INTERVAL,
            (MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL),
            "",
        )?;
        let timeout = check_duration(
            self.timeout.take(),
            &key("timeout"),
            DEFAULT_CHECK_TIMEOUT.min(interval),
            (Duration::from_millis(1), interval),
            " (the interval: a check ends before the next one starts)",
        )?;
        let rise = match self.rise {
            None => DEFAULT_CHECK_RISE,
            Some(rise) => in_range(rise, 1, MAX_RISE_FALL, &key("rise"))?,
        };
        let fall = match self.fall {
            None => DEFAULT_CHECK_FALL,
            Some(fall) => in_range(fall, 1, MAX_RISE_FALL, &key("fall"))?,
        };
        let port = match self.port {
            None => None,
            Some(port) => Some(in_range(port, 1u16, u16::MAX, &key("port"))?),
        };
        let on_failure = match self.on_failure.as_deref() {
            None | Some("remove") => OnFailure::Remove,
            Some("inhibit") => OnFailure::Inhibit,
            Some(other) => {
                return Err(ConfigError::invalid(
                    key("on_failure"),
                    format!("{other:?}"),
                    "expected \"remove\" (out of the pool, flows rescheduled) or \"inhibit\" \
                     (weight 0, existing flows continue)",
                ))
            }
        };
        Ok(HealthCheckConfig {
            kind: self.kind(at)?,
            interval,
            timeout,
            rise,
            fall,
            port,
            on_failure,
        })
    }

    /// The kind with its own keys (the others were refused already).
    fn kind(self, at: &str) -> Result<CheckKind, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        Ok(match self.kind.as_str() {
            "tcp" => CheckKind::Tcp,
            "http" => CheckKind::Http {
                path: check_path(self.path, &key("path"))?,
                expect_status: match self.expect_status {
                    None => 200,
                    Some(status) => in_range(status, 100, 599, &key("expect_status"))?,
                },
                expect_body: check_text(self.expect_body, &key("expect_body"), false)?,
            },
            "send_expect" => CheckKind::SendExpect {
                send: check_text(self.send, &key("send"), true)?.unwrap_or_default(),
                expect: check_text(self.expect, &key("expect"), false)?.ok_or_else(|| {
                    ConfigError::invalid(
                        key("expect"),
                        "(missing)",
                        "kind = \"send_expect\" needs expect = \"<what a healthy answer contains>\"",
                    )
                })?,
            },
            _ => CheckKind::Exec {
                command: check_command(self.command, &key("command"))?,
            },
        })
    }
}

/// A duration key of `[service.health_check]` within `bounds`, or `default`.
fn check_duration(
    value: Option<String>,
    key: &str,
    default: Duration,
    (low, high): (Duration, Duration),
    high_means: &str,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let duration = parse_duration(&text)
        .map_err(|error| ConfigError::invalid(key, format!("{text:?}"), error.to_string()))?;
    if duration < low || duration > high {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            format!(
                "expected {} to {}{high_means}",
                format_duration(low),
                format_duration(high)
            ),
        ));
    }
    Ok(duration)
}

/// `health_check.path`: goes into the request line as written, so no spaces or controls.
fn check_path(value: Option<String>, key: &str) -> Result<String, ConfigError> {
    let Some(path) = value else {
        return Ok("/".to_owned());
    };
    let valid = path.starts_with('/')
        && path.len() <= MAX_CHECK_TEXT
        && path.bytes().all(|byte| byte.is_ascii_graphic());
    if !valid {
        return Err(ConfigError::invalid(
            key,
            format!("{path:?}"),
            "expected a request path starting with '/', without spaces or control characters, \
             such as \"/healthz\"",
        ));
    }
    Ok(path)
}

/// `send`, `expect` or `expect_body`: at most [`MAX_CHECK_TEXT`] bytes, empty only if allowed.
fn check_text(
    value: Option<String>,
    key: &str,
    empty_allowed: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    if (text.is_empty() && !empty_allowed) || text.len() > MAX_CHECK_TEXT {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?}"),
            format!("expected 1 to {MAX_CHECK_TEXT} bytes"),
        ));
    }
    Ok(Some(text))
}

/// `health_check.command`: an absolute program path, then its arguments.
fn check_command(value: Option<Vec<String>>, key: &str) -> Result<Vec<String>, ConfigError> {
    let Some(command) = value else {
        return Err(ConfigError::invalid(
            key,
            "(missing)",
            "kind = \"exec\" needs command = [\"/path/to/check\", \"{address}\", \"{port}\"]",
        ));
    };
    let program_ok = command
        .first()
        .is_some_and(|program| program.starts_with('/'));
    if !program_ok || command.iter().any(|argument| argument.contains('\0')) {
        return Err(ConfigError::invalid(
            key,
            format!("{command:?}"),
            "expected an absolute program path and its arguments, such as \
             [\"/usr/local/bin/check\", \"{address}\", \"{port}\"] (run without a shell)",
        ));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use crate::config::fixtures::{assert_mentions, GOOD};
    use crate::config::Config;

    /// GOOD with `[service.health_check]` holding `lines`.
    fn with_check(lines: &str) -> String {
        GOOD.replacen(
            "\n[[service.backend]]",
            &format!("\n[service.health_check]\n{lines}\n\n[[service.backend]]"),
            1,
        )
    }

    fn check_error(lines: &str) -> String {
        match Config::parse(&with_check(lines)) {
            Ok(config) => panic!(
                "{lines:?} was accepted: {:?}",
                config.services[0].health_check
            ),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn health_checks_parse_with_defaults() {
        let config = Config::parse(&with_check("kind = \"tcp\"")).unwrap();
        let web = &config.services[0];
        assert_eq!(
            web.health_check,
            Some(HealthCheckConfig {
                kind: CheckKind::Tcp,
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_TIMEOUT,
                rise: DEFAULT_CHECK_RISE,
                fall: DEFAULT_CHECK_FALL,
                port: None,
                on_failure: OnFailure::Remove,
            })
        );
        assert_eq!(web.check_port(&web.backends[0]), 80);
        assert!(
            web.summary()
                .ends_with("; tcp check every 2s, timeout 1s, rise 2, fall 3, remove on failure"),
            "{}",
            web.summary()
        );
        // A short interval shortens the default timeout with it.
        let config = Config::parse(&with_check("kind = \"tcp\"\ninterval = \"300ms\"")).unwrap();
        let check = config.services[0].health_check.as_ref().unwrap();
        assert_eq!(
            (check.interval, check.timeout),
            (Duration::from_millis(300), Duration::from_millis(300))
        );
        assert_eq!(Config::parse(GOOD).unwrap().services[0].health_check, None);
    }

    #[test]
    fn health_checks_parse_every_kind_and_key() {
        let http = Config::parse(&with_check(
            "kind = \"http\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 5\n\
             port = 8080\npath = \"/healthz\"\nexpect_status = 204\nexpect_body = \"ok\"\n\
             on_failure = \"inhibit\"",
        ))
        .unwrap();
        let web = &http.services[0];
        assert_eq!(
            web.health_check,
            Some(HealthCheckConfig {
                kind: CheckKind::Http {
                    path: "/healthz".to_owned(),
                    expect_status: 204,
                    expect_body: Some("ok".to_owned()),
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 5,
                port: Some(8080),
                on_failure: OnFailure::Inhibit,
            })
        );
        assert_eq!(web.check_port(&web.backends[1]), 8080);
        let plain = Config::parse(&with_check("kind = \"http\"")).unwrap();
        assert_eq!(
            plain.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::Http {
                path: "/".to_owned(),
                expect_status: 200,
                expect_body: None
            }
        );
        let send_expect = Config::parse(&with_check(
            "kind = \"send_expect\"\nsend = \"PING\\r\\n\"\nexpect = \"PONG\"",
        ))
        .unwrap();
        assert_eq!(
            send_expect.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::SendExpect {
                send: "PING\r\n".to_owned(),
                expect: "PONG".to_owned()
            }
        );
        let banner =
            Config::parse(&with_check("kind = \"send_expect\"\nexpect = \"220 \"")).unwrap();
        assert_eq!(
            banner.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::SendExpect {
                send: String::new(),
                expect: "220 ".to_owned()
            }
        );
        let exec = Config::parse(&with_check(
            "kind = \"exec\"\ncommand = [\"/usr/local/bin/check\", \"{address}\", \"{port}\"]",
        ))
        .unwrap();
        assert_eq!(
            exec.services[0].health_check.as_ref().unwrap().kind,
            CheckKind::Exec {
                command: vec![
                    "/usr/local/bin/check".to_owned(),
                    "{address}".to_owned(),
                    "{port}".to_owned()
                ]
            }
        );
    }

    /// Each `(lines, expected)`: `[service.health_check]` holding `lines` is refused with an
    /// error naming the check's key path and mentioning every `expected` part.
    fn assert_check_errors(cases: &[(&str, &[&str])]) {
        for (lines, expected) in cases {
            let message = check_error(lines);
            assert!(
                message.starts_with("service[0] \"web\": health_check"),
                "{lines:?}: {message}"
            );
            assert_mentions(&message, expected);
        }
    }

    #[test]
    fn health_check_timing_errors_name_key_and_value() {
        assert_check_errors(&[
            (
                "kind = \"icmp\"",
                &[
                    ".kind = \"icmp\"",
                    "expected tcp, http, send_expect or exec",
                ],
            ),
            (
                "kind = \"tcp\"\ninterval = \"5ms\"",
                &[".interval = \"5ms\"", "expected 10ms to 1h"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"2h\"",
                &[".interval = \"2h\"", "expected 10ms to 1h"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"often\"",
                &[".interval = \"often\"", "expected a duration"],
            ),
            (
                "kind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                &[".timeout = \"2s\"", "expected 1ms to 1s (the interval"],
            ),
            (
                "kind = \"tcp\"\ntimeout = \"0s\"",
                &[".timeout = \"0s\"", "expected 1ms to 2s"],
            ),
            (
                "kind = \"tcp\"\nrise = 0",
                &[".rise = 0", "expected 1..=100"],
            ),
            (
                "kind = \"tcp\"\nfall = 101",
                &[".fall = 101", "expected 1..=100"],
            ),
            (
                "kind = \"tcp\"\nport = 0",
                &[".port = 0", "expected 1..=65535"],
            ),
            (
                "kind = \"tcp\"\non_failure = \"drain\"",
                &[".on_failure = \"drain\"", "expected \"remove\""],
            ),
        ]);
        // Unknown keys and wrong types are named with their table.
        assert_mentions(
            &check_error("kind = \"tcp\"\nintervall = \"1s\""),
            &[
                "service[0].health_check.intervall",
                "unknown field `intervall`",
            ],
        );
        assert_mentions(
            &check_error("kind = \"tcp\"\nrise = \"2\""),
            &["service[0].health_check.rise", "expected an integer"],
        );
        assert_mentions(
            &check_error("interval = \"1s\""),
            &["service[0].health_check", "missing field `kind`"],
        );
    }

    #[test]
    fn health_check_kind_errors_name_key_and_value() {
        assert_check_errors(&[
            (
                "kind = \"tcp\"\npath = \"/healthz\"",
                &[
                    ".path = \"/healthz\"",
                    "only meaningful with kind = \"http\"",
                ],
            ),
            (
                "kind = \"http\"\nexpect = \"ok\"",
                &[
                    ".expect = \"ok\"",
                    "only meaningful with kind = \"send_expect\"",
                ],
            ),
            (
                "kind = \"http\"\ncommand = [\"/bin/true\"]",
                &[
                    ".command = [\"/bin/true\"]",
                    "only meaningful with kind = \"exec\"",
                ],
            ),
            (
                "kind = \"http\"\npath = \"healthz\"",
                &[".path = \"healthz\"", "starting with '/'"],
            ),
            (
                "kind = \"http\"\npath = \"/a b\"",
                &[".path = \"/a b\"", "without spaces"],
            ),
            (
                "kind = \"http\"\nexpect_status = 99",
                &[".expect_status = 99", "expected 100..=599"],
            ),
            (
                "kind = \"http\"\nexpect_body = \"\"",
                &[".expect_body = \"\"", "expected 1 to 4096 bytes"],
            ),
            (
                "kind = \"send_expect\"\nsend = \"PING\"",
                &[".expect = (missing)", "needs expect"],
            ),
            (
                "kind = \"exec\"",
                &[".command = (missing)", "needs command"],
            ),
            (
                "kind = \"exec\"\ncommand = [\"check\", \"{address}\"]",
                &[
                    ".command = [\"check\", \"{address}\"]",
                    "absolute program path",
                ],
            ),
            (
                "kind = \"exec\"\ncommand = []",
                &[".command = []", "absolute program path"],
            ),
        ]);
    }

    #[test]
    fn reference_config_documents_health_checks_and_fallback() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let reference = Config::load(&configs.join("reference.toml")).unwrap();
        let web = &reference.services[0];
        let check = web.health_check.as_ref().unwrap();
        assert_eq!(
            (
                check.kind.name(),
                check.interval,
                check.timeout,
                check.rise,
                check.fall
            ),
            (
                "http",
                Duration::from_secs(1),
                Duration::from_millis(500),
                2,
                3
            )
        );
        assert_eq!(
            web.fallback.as_ref().map(|fallback| fallback.address),
            Some(Ipv4Addr::new(192, 0, 2, 50).into())
        );
        // Every key of the table is documented, set or commented out.
        let text = std::fs::read_to_string(configs.join("reference.toml")).unwrap();
        for key in [
            "kind",
            "interval",
            "timeout",
            "rise",
            "fall",
            "on_failure",
            "port",
            "path",
            "expect_status",
            "expect_body",
            "send",
            "expect",
            "command",
        ] {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "reference.toml does not document health_check.{key}"
            );
        }
    }
}
