//! Who may change the director through its control socket.
//!
//! The socket file's mode and group decide who can connect at all (default 0660: the owner,
//! root, and the socket's group). Anyone who can connect may read stats. A mutating request
//! (`Request::is_mutating`) is served only for a peer whose credentials, as the kernel reports
//! them with `SO_PEERCRED` at connect time, are root, the director's own user, or a member of
//! the configured `stats_socket_group` (primary group, or a supplementary group read from
//! `/proc/<pid>/status`); others get "permission denied" and nothing changes.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The connected client's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its process id (0 if unknown).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// Its supplementary groups, if they could be read.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the process at the other end of `stream` (`SO_PEERCRED`), with its
    /// supplementary groups from `/proc/<pid>/status` (empty if that process is already gone).
    pub fn of(stream: &UnixStream) -> io::Result<Peer> {
        let mut credentials = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: the fd is a live socket owned by `stream`; `credentials` and `length` are
        // valid for writes of the sizes given, and the kernel writes at most `length` bytes.
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::from_mut(&mut credentials).cast(),
                &raw mut length,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        let groups = std::fs::read_to_string(format!("/proc/{}/status", credentials.pid))
            .map(|status| supplementary_groups(&status))
            .unwrap_or_default();
        Ok(Peer {
            pid: credentials.pid,
            uid: credentials.uid,
            gid: credentials.gid,
            groups,
        })
    }

    /// "uid 65534 gid 65534 pid 1234", for messages.
    pub fn describe(&self) -> String {
        format!("uid {} gid {} pid {}", self.uid, self.gid, self.pid)
    }
}

/// The `Groups:` line of a `/proc/<pid>/status` file.
pub fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|gid| gid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Who may send mutating requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The director's own effective uid.
    pub owner_uid: u32,
    /// The configured owner of the socket file (`stats_socket_owner`), if any: name and uid.
    pub socket_owner: Option<(String, u32)>,
    /// The configured group (`stats_socket_group`), if any: its name and gid.
    pub group: Option<(String, u32)>,
}

impl AccessPolicy {
    /// Root, the director's own user, and nobody else.
    pub fn owner_only() -> AccessPolicy {
        AccessPolicy {
            owner_uid: effective_uid(),
            socket_owner: None,
            group: None,
        }
    }

    /// `Ok` if `peer` may change state, else why not ("permission denied: ...").
    pub fn check_mutation(&self, peer: &Peer) -> Result<(), String> {
        let socket_owner = self.socket_owner.as_ref().map(|(_, uid)| *uid);
        if peer.uid == 0 || peer.uid == self.owner_uid || Some(peer.uid) == socket_owner {
            return Ok(());
        }
        match &self.group {
            Some((_, gid)) if peer.gid == *gid || peer.groups.contains(gid) => Ok(()),
            Some((name, gid)) => Err(format!(
                "permission denied: {} is not root, the director's user (uid {}) or a member \
                 of group {name} ({gid}); reading stats is allowed",
                peer.describe(),
                self.owner_uid
            )),
            None => Err(format!(
                "permission denied: {} is not root or the director's user (uid {}); set \
                 [director] stats_socket_group to let a group change the director; reading \
                 stats is allowed",
                peer.describe(),
                self.owner_uid
            )),
        }
    }
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The uid of user `name` from `/etc/passwd` (a number is taken as a uid as it is).
pub fn user_id(name: &str) -> io::Result<u32> {
    if let Ok(uid) = name.parse() {
        return Ok(uid);
    }
    let users = std::fs::read_to_string("/etc/passwd")?;
    lookup_id(&users, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user {name:?} in /etc/passwd"),
        )
    })
}

/// The gid of group `name` from `/etc/group` (a number is taken as a gid as it is).
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    lookup_id(&groups, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group {name:?} in /etc/group"),
        )
    })
}

/// The id (third field) of `name` in the text of an `/etc/group` or `/etc/passwd` file.
pub fn lookup_id(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let group = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?;
        (group == name).then(|| gid.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: 42,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_and_owner_may_mutate() {
        let policy = AccessPolicy {
            owner_uid: 1000,
            socket_owner: Some(("lbops".to_owned(), 1002)),
            group: None,
        };
        assert_eq!(policy.check_mutation(&peer(1002, 1002, &[])), Ok(()));
        assert_eq!(policy.check_mutation(&peer(0, 0, &[])), Ok(()));
        assert_eq!(policy.check_mutation(&peer(1000, 1000, &[])), Ok(()));
        let refused = policy.check_mutation(&peer(65534, 65534, &[])).unwrap_err();
        assert!(
            refused.starts_with("permission denied: uid 65534 gid 65534 pid 42"),
            "{refused}"
        );
        assert!(refused.contains("stats_socket_group"), "{refused}");
    }

    #[test]
    fn group_members_may_mutate() {
        let policy = AccessPolicy {
            owner_uid: 0,
            socket_owner: None,
            group: Some(("lbadmin".to_owned(), 120)),
        };
        assert_eq!(policy.check_mutation(&peer(1001, 120, &[])), Ok(()));
        assert_eq!(policy.check_mutation(&peer(1001, 100, &[27, 120])), Ok(()));
        let refused = policy
            .check_mutation(&peer(1001, 100, &[27, 121]))
            .unwrap_err();
        assert!(refused.contains("group lbadmin (120)"), "{refused}");
    }

    #[test]
    fn parses_proc_status_and_etc_group() {
        let status =
            "Name:\tcat\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t4 27 120 \nNSpid:\t1\n";
        assert_eq!(supplementary_groups(status), [4, 27, 120]);
        assert_eq!(supplementary_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(supplementary_groups("Name: x\n"), Vec::<u32>::new());
        let groups = "root:x:0:\nadm:x:4:syslog\nlbadmin:x:120:alice,bob\nbroken\n";
        assert_eq!(lookup_id(groups, "lbadmin"), Some(120));
        assert_eq!(lookup_id(groups, "adm"), Some(4));
        assert_eq!(lookup_id(groups, "lb"), None);
        assert_eq!(group_id("4242").unwrap(), 4242);
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(group_id("no-such-group-here").is_err());
    }

    #[test]
    fn reads_its_own_credentials() {
        let (left, right) = UnixStream::pair().unwrap();
        let peer = Peer::of(&left).unwrap();
        drop(right);
        assert_eq!(peer.uid, effective_uid());
        assert_eq!(u32::try_from(peer.pid).unwrap(), std::process::id());
    }
}
