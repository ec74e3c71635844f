//! What the unit tests of every section share: a small valid configuration to edit, and
//! assertions on the error it then produces.

use super::Config;

pub(super) const GOOD: &str = r#"
[director]
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
protocol = "tcp"
scheduler = "maglev"
forwarding = "dr"

[[service.backend]]
address = "192.0.2.11"

[[service.backend]]
address = "192.0.2.12"
weight = 2
mac = "02:00:00:00:00:12"
"#;

/// Replaces `from` (which must occur in GOOD) and returns the error message.
pub(super) fn error_with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in the base config");
    let text = GOOD.replacen(from, to, 1);
    match Config::parse(&text) {
        Ok(config) => panic!("{to:?} was accepted: {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts that `message` contains every one of `parts`.
pub(super) fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} does not mention {part:?}"
        );
    }
}
