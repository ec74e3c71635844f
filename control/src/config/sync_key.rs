//! `ha.sync_key` and `ha.sync_key_file`: the shared secret that authenticates state sync
//! ([`SyncKey`]), given inline or read from a file, and checked (one of the two, at least
//! [`MIN_SYNC_KEY_LEN`] bytes, a readable file).
//!
//! It reads the key file and looks at its permission bits (a file others can read gets a
//! warning, not a refusal: the operator may have reasons), nothing else. What it must not do:
//! let the key reach a log or an error message (its `Debug` shows only its length).

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tracing::warn;

use super::ConfigError;

/// Shortest key accepted, in bytes. RFC 2104 recommends a key no shorter than the hash's output
/// (32 bytes for SHA-256); 16 bytes of a random key is still beyond any search, and is the
/// least that a hand-typed passphrase must reach.
pub const MIN_SYNC_KEY_LEN: usize = 16;

/// The secret shared by the directors of a pair, as bytes (the text of `ha.sync_key`, or the
/// key file's contents less one trailing newline; not decoded: a base64 string is used as it
/// is written).
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey(Vec<u8>);

impl SyncKey {
    /// A key of `bytes`, if at least [`MIN_SYNC_KEY_LEN`] long.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<SyncKey> {
        let bytes = bytes.into();
        (bytes.len() >= MIN_SYNC_KEY_LEN).then_some(SyncKey(bytes))
    }

    /// The key's bytes, for the MAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncKey(<{} bytes>)", self.0.len())
    }
}

/// `ha.sync_key` or `ha.sync_key_file` (at most one), for a table with `sync` as given.
pub(super) fn validate_sync_key(
    inline: Option<String>,
    file: Option<String>,
    sync: bool,
) -> Result<Option<SyncKey>, ConfigError> {
    let (key, bytes, path) = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(path)) => {
            return Err(ConfigError::invalid(
                "ha.sync_key_file",
                format!("{path:?}"),
                "ha.sync_key is set too; give the key one way, inline or in a file",
            ))
        }
        (Some(text), None) => ("ha.sync_key", text.into_bytes(), None),
        (None, Some(path)) => {
            let bytes = read_key_file(&path)?;
            ("ha.sync_key_file", bytes, Some(path))
        }
    };
    // An inline key is shown by its length, a file by its path and length: the key itself
    // stays out of messages.
    let shown = match &path {
        None => format!("<{} bytes>", bytes.len()),
        Some(path) => format!("{path:?} ({} bytes)", bytes.len()),
    };
    if !sync {
        return Err(ConfigError::invalid(
            key,
            shown,
            "the key authenticates state sync, which is off; set ha.sync = true or remove it",
        ));
    }
    let length = bytes.len();
    SyncKey::new(bytes).map(Some).ok_or_else(|| {
        let what = if length == 0 { "empty" } else { "too short" };
        ConfigError::invalid(
            key,
            shown,
            format!(
                "the key is {what}; expected at least {MIN_SYNC_KEY_LEN} bytes, such as the \
                 output of `head -c 32 /dev/urandom | base64`"
            ),
        )
    })
}

/// The key file's contents less one trailing newline (`echo` and editors add one). Warns when
/// its group or others may read it.
fn read_key_file(path: &str) -> Result<Vec<u8>, ConfigError> {
    let unreadable = |error: std::io::Error| {
        ConfigError::invalid(
            "ha.sync_key_file",
            format!("{path:?}"),
            format!("cannot read the key file: {error}"),
        )
    };
    let mut bytes = std::fs::read(Path::new(path)).map_err(unreadable)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warn!(
            key = "ha.sync_key_file",
            path,
            mode = format!("{:04o}", mode & 0o7777),
            "the sync key file may be read by its group or others; chmod 600 it"
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::PathBuf;

    use super::*;
    use crate::config::fixtures::{assert_mentions, GOOD};
    use crate::config::Config;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// GOOD with `[ha]` vrid 51, sync on, and `keys`.
    fn with_keys(keys: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{GOOD}\n[ha]\nvrid = 51\nsync = true\n{keys}\n"))
    }

    fn error(keys: &str) -> String {
        match with_keys(keys) {
            Ok(config) => panic!("{keys:?} was accepted: {:?}", config.ha),
            Err(error) => error.to_string(),
        }
    }

    /// A file of `contents` with `mode`, removed when dropped.
    struct KeyFile(PathBuf);

    impl KeyFile {
        fn new(name: &str, contents: &[u8], mode: u32) -> KeyFile {
            let path = std::env::temp_dir()
                .join(format!("director-sync-key-{}-{name}", std::process::id()));
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            KeyFile(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }

        fn keys(&self) -> String {
            format!("sync_key_file = {:?}", self.path())
        }
    }

    impl Drop for KeyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn inline_key_is_taken_as_bytes_and_kept_out_of_debug() {
        let ha = with_keys(&format!("sync_key = {KEY:?}"))
            .unwrap()
            .ha
            .unwrap();
        let key = ha.sync_key.clone().expect("the key");
        assert_eq!(key.as_bytes(), KEY.as_bytes());
        let shown = format!("{ha:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("SyncKey(<32 bytes>)"), "{shown}");
        assert!(
            ha.summary()
                .ends_with(", sync id 51 port 8848, authenticated"),
            "{}",
            ha.summary()
        );
        assert!(with_keys("").unwrap().ha.unwrap().sync_key.is_none());
    }

    #[test]
    fn key_file_loses_one_trailing_newline_only() {
        let file = KeyFile::new("newline", format!("{KEY}\n").as_bytes(), 0o600);
        let key = with_keys(&file.keys()).unwrap().ha.unwrap().sync_key;
        assert_eq!(key.unwrap().as_bytes(), KEY.as_bytes());
        let file = KeyFile::new("two", format!("{KEY}\n\n").as_bytes(), 0o600);
        let key = with_keys(&file.keys()).unwrap().ha.unwrap().sync_key;
        assert_eq!(key.unwrap().as_bytes(), format!("{KEY}\n").as_bytes());
        // Readable by others: accepted (with a warning).
        let file = KeyFile::new("open", KEY.as_bytes(), 0o644);
        assert!(with_keys(&file.keys())
            .unwrap()
            .ha
            .unwrap()
            .sync_key
            .is_some());
    }

    #[test]
    fn key_errors_name_the_key_and_the_value() {
        assert_mentions(
            &error("sync_key = \"\""),
            &["ha.sync_key = <0 bytes>", "empty", "at least 16 bytes"],
        );
        assert_mentions(
            &error("sync_key = \"short\""),
            &["ha.sync_key = <5 bytes>", "too short", "at least 16 bytes"],
        );
        let message = error(&format!("sync_key = {KEY:?}\nsync_key_file = \"/etc/key\""));
        assert_mentions(
            &message,
            &["ha.sync_key_file = \"/etc/key\"", "ha.sync_key is set too"],
        );
        assert!(!message.contains(KEY), "{message}");
        assert_mentions(
            &error("sync_key_file = \"/nonexistent/director-key\""),
            &[
                "ha.sync_key_file = \"/nonexistent/director-key\"",
                "cannot read the key file",
            ],
        );
        let empty = KeyFile::new("empty", b"\n", 0o600);
        assert_mentions(
            &error(&empty.keys()),
            &[
                &format!("ha.sync_key_file = {:?} (0 bytes)", empty.path()),
                "empty",
            ],
        );
        let short = KeyFile::new("short", b"0123456789abcde", 0o600);
        assert_mentions(
            &error(&short.keys()),
            &[
                &format!("ha.sync_key_file = {:?} (15 bytes)", short.path()),
                "too short",
            ],
        );
        assert_mentions(&error("sync_key = 42"), &["sync_key", "invalid type"]);
        // A key without sync.
        let message = match Config::parse(&format!("{GOOD}\n[ha]\nvrid = 51\nsync_key = {KEY:?}\n"))
        {
            Ok(config) => panic!("accepted: {:?}", config.ha),
            Err(error) => error.to_string(),
        };
        assert_mentions(&message, &["ha.sync_key = <32 bytes>", "ha.sync = true"]);
        assert!(!message.contains(KEY), "{message}");
    }
}
