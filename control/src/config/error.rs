//! Why a configuration was rejected ([`ConfigError`]), and where: the line and column of an
//! offset, and the best-effort key path (`service[1].backend[0].weight`) of a TOML shape error.
//!
//! It only describes errors; it decides nothing about what is valid.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

/// Why a configuration was rejected. Each `Display` names where, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Not valid TOML.
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// Valid TOML that does not have the expected shape: an unknown key, a missing key, or a value
    /// of the wrong type.
    #[error("{key}: {message} (line {line}, column {column})")]
    Structure {
        /// Key path as far as it can be told from the file, e.g. `service[0].backend[1].wieght`.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong, e.g. ``unknown field `wieght`, expected one of `address`, `weight`, `mac` ``.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{key} = {value}: {expected}")]
    Invalid {
        /// Where, e.g. `service[0] "web": scheduler`.
        key: String,
        /// The value as written, e.g. `"fastest"`.
        value: String,
        /// What is wrong and what was expected.
        expected: String,
    },
}

impl ConfigError {
    pub(super) fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |position| position + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Best-effort key path of the value or key at `offset`, e.g. `service[1].backend[0].weight`,
/// worked out from the table headers above it and the `key =` on its line. Used only to make
/// shape errors easier to find; the line and column stay authoritative.
pub(super) fn key_path_at(text: &str, offset: usize) -> String {
    let mut array_counts: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|rest| rest.split("]]").next())
        {
            let name = name.trim().to_owned();
            *array_counts.entry(name.clone()).or_insert(0) += 1;
            let nested = format!("{name}.");
            array_counts.retain(|other, _| !other.starts_with(&nested));
            table = render_table(&name, &array_counts);
        } else if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
        {
            table = render_table(name.trim(), &array_counts);
        }
        let line_end = line_start + line.len();
        if offset < line_end || line_end == text.len() {
            if trimmed.starts_with('[') || trimmed.starts_with('#') {
                return table;
            }
            let Some((key, _)) = line.split_once('=') else {
                return table;
            };
            let key = key.trim().trim_matches('"');
            return if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
        }
        line_start = line_end;
    }
    table
}

/// `service.backend` -> `service[0].backend[2]`, given how many of each array table were seen.
fn render_table(name: &str, array_counts: &HashMap<String, usize>) -> String {
    let mut rendered = String::new();
    let mut prefix = String::new();
    for (position, part) in name.split('.').enumerate() {
        let part = part.trim();
        if position > 0 {
            rendered.push('.');
            prefix.push('.');
        }
        prefix.push_str(part);
        rendered.push_str(part);
        if let Some(count) = array_counts.get(&prefix) {
            let _ = write!(rendered, "[{}]", count.saturating_sub(1));
        }
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{assert_mentions, error_with, GOOD};
    use crate::config::Config;

    #[test]
    fn syntax_error_has_line_and_column() {
        let error = Config::parse(&GOOD.replace("port = 80", "port = = 80")).unwrap_err();
        let ConfigError::Syntax { line, column, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!((line, column), (8, 8));
        assert_mentions(&error.to_string(), &["line 8, column 8"]);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let message = error_with("weight = 2", "wieght = 2");
        assert_mentions(
            &message,
            &[
                "service[0].backend[1].wieght",
                "unknown field `wieght`",
                "line 18",
            ],
        );
        let message = error_with("port = 80", "port = 80\ncolour = \"blue\"");
        assert_mentions(
            &message,
            &[
                "service[0].colour",
                "unknown field `colour`",
                "expected one of",
            ],
        );
        let message = error_with(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nthreads = 2",
        );
        assert_mentions(&message, &["director.threads", "unknown field `threads`"]);
        let message = error_with(
            "[director]",
            "[director.timeouts]\ntcp_est = \"1m\"\n[director]",
        );
        assert_mentions(
            &message,
            &["director.timeouts.tcp_est", "unknown field `tcp_est`"],
        );
        let message = error_with("[director]", "[directr]\n[director]");
        assert_mentions(&message, &["directr", "unknown field `directr`"]);
    }

    #[test]
    fn wrong_types_and_missing_keys_are_named() {
        let message = error_with("port = 80", "port = \"80\"");
        assert_mentions(
            &message,
            &[
                "service[0].port",
                "invalid type: string \"80\", expected an integer",
                "line 8",
            ],
        );
        let message = error_with("vip = \"192.0.2.10\"\n", "");
        assert_mentions(&message, &["service[0]", "missing field `vip`"]);
        let message = error_with("interfaces = [\"eth0\"]", "interfaces = \"eth0\"");
        assert_mentions(&message, &["director.interfaces", "invalid type"]);
    }
}
