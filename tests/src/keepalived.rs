//! keepalived as a VRRP peer inside a lab namespace: its configuration, start, state (read from
//! its log), clean stop and kill.
//!
//! keepalived runs in the foreground (`--dont-fork`) with only its VRRP subsystem, logging to
//! the console (a file in the lab directory), with configuration and pid files of its own
//! there, so it touches nothing outside its namespace. Its VRRP work happens in a child
//! process; the guard kills both, and the lab's teardown kills whatever is left in the
//! namespace anyway.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{poll_check, Check, ChildGuard};
use crate::lab::{which, Host, Lab};
use crate::sys;

/// Where keepalived is expected (Debian's package).
const KEEPALIVED_BIN: &str = "/usr/sbin/keepalived";
/// Bound on keepalived reaching its first state after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a clean stop (it sends priority 0 and removes its addresses first).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the log is read while waiting for a state.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// One keepalived `vrrp_instance`, VRRPv3.
#[derive(Clone, Debug)]
pub struct KeepalivedOptions {
    /// `virtual_router_id`.
    pub vrid: u8,
    /// `priority`.
    pub priority: u8,
    /// `advert_int`, a multiple of 10 ms.
    pub advert_interval: Duration,
    /// `false` writes `nopreempt`.
    pub preempt: bool,
    /// `virtual_ipaddress`, each as a /32 (IPv4) or /128 (IPv6) on `eth0`; one family per
    /// instance, as keepalived requires.
    pub vips: Vec<String>,
    /// `unicast_peer`; empty advertises to 224.0.0.18.
    pub unicast_peers: Vec<String>,
}

impl KeepalivedOptions {
    /// VRID 51, `priority`, 100 ms advertisements, preemption, the lab's VIP, multicast.
    pub fn new(priority: u8) -> Self {
        Self {
            vrid: 51,
            priority,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            vips: vec![crate::VIP.to_owned()],
            unicast_peers: Vec::new(),
        }
    }

    /// The keepalived.conf text.
    pub fn to_conf(&self, router_id: &str) -> String {
        let centiseconds = self.advert_interval.as_millis() / 10;
        let mut conf = format!(
            "global_defs {{\n    router_id {router_id}\n    vrrp_version 3\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    \
             virtual_router_id {}\n    priority {}\n    advert_int {}.{:02}\n",
            self.vrid,
            self.priority,
            centiseconds / 100,
            centiseconds % 100
        );
        if !self.preempt {
            conf.push_str("    nopreempt\n");
        }
        if !self.unicast_peers.is_empty() {
            conf.push_str("    unicast_peer {\n");
            for peer in &self.unicast_peers {
                let _ = writeln!(conf, "        {peer}");
            }
            conf.push_str("    }\n");
        }
        conf.push_str("    virtual_ipaddress {\n");
        for vip in &self.vips {
            // An IPv6 VIP makes the instance an IPv6 one (to ff02::12 from the link-local).
            let prefix = if vip.contains(':') { 128 } else { 32 };
            let _ = writeln!(conf, "        {vip}/{prefix} dev eth0");
        }
        conf.push_str("    }\n}\n");
        conf
    }
}

/// A keepalived state, as its log announces it (`(VI_1) Entering MASTER STATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepalivedState {
    /// BACKUP.
    Backup,
    /// MASTER.
    Master,
    /// FAULT.
    Fault,
}

impl KeepalivedState {
    fn from_log_line(line: &str) -> Option<Self> {
        let rest = line.split("Entering ").nth(1)?;
        if rest.starts_with("MASTER STATE") {
            Some(KeepalivedState::Master)
        } else if rest.starts_with("BACKUP STATE") {
            Some(KeepalivedState::Backup)
        } else if rest.starts_with("FAULT STATE") {
            Some(KeepalivedState::Fault)
        } else {
            None
        }
    }
}

/// A running keepalived. Dropping it kills it (and its VRRP child) without a clean stop.
pub struct Keepalived {
    host: Host,
    child: Option<ChildGuard>,
    log: PathBuf,
    vrrp_pid_file: PathBuf,
}

impl Keepalived {
    pub(crate) fn start(lab: &Lab, host: Host, options: &KeepalivedOptions) -> Result<Self> {
        let binary = if Path::new(KEEPALIVED_BIN).is_file() {
            PathBuf::from(KEEPALIVED_BIN)
        } else {
            which("keepalived").context("keepalived is needed (apt-get install keepalived)")?
        };
        let conf = lab.new_file(&format!("{host}-keepalived.conf"));
        fs::write(&conf, options.to_conf(&format!("{}{host}", lab.prefix())))
            .with_context(|| format!("writing {}", conf.display()))?;
        let pid_file = lab.new_file(&format!("{host}-keepalived.pid"));
        let vrrp_pid_file = lab.new_file(&format!("{host}-keepalived-vrrp.pid"));
        let checkers_pid_file = lab.new_file(&format!("{host}-keepalived-checkers.pid"));
        let log = lab.new_file(&format!("{host}-keepalived.log"));
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let args = [
            path(&binary),
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--no-syslog".into(),
            "--vrrp".into(),
            "--dont-respawn".into(),
            "--use-file".into(),
            path(&conf),
            "--pid".into(),
            path(&pid_file),
            "--vrrp_pid".into(),
            path(&vrrp_pid_file),
            "--checkers_pid".into(),
            path(&checkers_pid_file),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = lab.try_spawn_logged(host, &args, &log)?;
        let mut keepalived = Keepalived {
            host,
            child: Some(child),
            log,
            vrrp_pid_file,
        };
        keepalived.wait_for_any_state(START_TIMEOUT)?;
        Ok(keepalived)
    }

    /// The host it runs on.
    pub fn host(&self) -> Host {
        self.host
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every state it entered, in order.
    pub fn states(&self) -> Vec<KeepalivedState> {
        self.log()
            .lines()
            .filter_map(KeepalivedState::from_log_line)
            .collect()
    }

    /// The state it entered last.
    pub fn state(&self) -> Option<KeepalivedState> {
        self.states().last().copied()
    }

    /// Waits until it is in `state` (its latest logged state), at most `timeout`; returns how
    /// long that took. The error carries its log.
    pub fn wait_for_state(
        &mut self,
        state: KeepalivedState,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        self.poll(
            &format!("keepalived on {} entering {state:?}", self.host),
            timeout,
            |k| k.state() == Some(state),
        )?;
        Ok(start.elapsed())
    }

    fn wait_for_any_state(&mut self, timeout: Duration) -> Result<()> {
        self.poll(
            &format!("keepalived on {} starting", self.host),
            timeout,
            |k| k.state().is_some(),
        )
    }

    fn poll(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<()> {
        poll_check(what, timeout, POLL_INTERVAL, || {
            if done(self) {
                return Check::Ready(());
            }
            let exited = self.child.as_mut().map_or(Ok(None), ChildGuard::try_wait);
            match exited {
                Ok(Some(status)) => {
                    Check::Fatal(format!("it exited ({status}); its log:\n{}", self.log()))
                }
                Ok(None) => Check::NotYet(format!("its log:\n{}", self.log())),
                Err(error) => Check::Fatal(format!("{error:#}")),
            }
        })
    }

    /// Stops it cleanly (SIGTERM): a master sends priority 0 first. Waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        self.terminate();
        self.wait_exit()
    }

    /// Asks it to stop (SIGTERM) without waiting: it resigns at once, then takes about a second
    /// to exit. [`Keepalived::wait_exit`] waits for that.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            child.signal(libc::SIGTERM);
        }
    }

    /// Waits (at most 5 s) for it to exit after [`Keepalived::terminate`].
    pub fn wait_exit(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("keepalived on {} was already stopped", self.host);
        };
        match child.wait_timeout(STOP_TIMEOUT)? {
            Some(_) => Ok(()),
            None => bail!(
                "keepalived on {} did not stop within {STOP_TIMEOUT:?}; its log:\n{}",
                self.host,
                self.log()
            ),
        }
    }

    /// Kills it (SIGKILL to its VRRP process and to it): a crash, no priority 0.
    pub fn kill(&mut self) {
        self.kill_vrrp_child();
        if let Some(child) = self.child.take() {
            let _ = child.kill();
        }
    }

    fn kill_vrrp_child(&self) {
        let pid = fs::read_to_string(&self.vrrp_pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        // Only if that pid is still a keepalived: a stale pid file must not kill a stranger.
        let is_keepalived = |pid: u32| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "keepalived")
        };
        if let Some(pid) = pid.filter(|&pid| is_keepalived(pid)) {
            sys::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_has_every_option() {
        let options = KeepalivedOptions {
            preempt: false,
            unicast_peers: vec!["192.0.2.3".into()],
            vips: vec!["192.0.2.10".into(), "192.0.2.20".into()],
            advert_interval: Duration::from_millis(1230),
            ..KeepalivedOptions::new(90)
        };
        let conf = options.to_conf("lab");
        for part in [
            "vrrp_version 3",
            "virtual_router_id 51",
            "priority 90",
            "advert_int 1.23\n",
            "nopreempt",
            "unicast_peer {\n        192.0.2.3\n",
            "192.0.2.10/32 dev eth0",
            "192.0.2.20/32 dev eth0",
            "state BACKUP",
        ] {
            assert!(conf.contains(part), "{part:?} missing from:\n{conf}");
        }
        let ipv6 = KeepalivedOptions {
            vips: vec!["2001:db8::10".into()],
            ..KeepalivedOptions::new(90)
        };
        assert!(ipv6.to_conf("lab").contains("2001:db8::10/128 dev eth0"));
        let conf = KeepalivedOptions::new(100).to_conf("lab");
        assert!(conf.contains("advert_int 0.10\n"), "{conf}");
        assert!(!conf.contains("nopreempt") && !conf.contains("unicast_peer"));
    }

    #[test]
    fn states_from_log_lines() {
        let line = |text: &str| KeepalivedState::from_log_line(text);
        assert_eq!(
            line("Mon Nov 23 16:28:50 2026: (VI_1) Entering BACKUP STATE (init)"),
            Some(KeepalivedState::Backup)
        );
        assert_eq!(
            line("Mon Nov 23 16:28:50 2026: (VI_1) Entering MASTER STATE"),
            Some(KeepalivedState::Master)
        );
        assert_eq!(
            line("(VI_1) Entering FAULT STATE"),
            Some(KeepalivedState::Fault)
        );
        assert_eq!(line("(VI_1) Receive advertisement timeout"), None);
    }
}
