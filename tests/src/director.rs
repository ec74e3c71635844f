//! Finding the `director` and `lbstat` binaries, and running the director in a lab.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::{poll_check, poll_until, run_with_timeout, Check, ChildGuard};
use crate::config::DirectorConfig;
use crate::lab::{check_output, has_address, Host, Lab};
use crate::VIP;

/// Bound on the director becoming ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`DirectorProcess::stop`] waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Bound on one `lbstat` run.
const LBSTAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one `director reload` / `director backend ...` run.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

/// What a `director reload` / `director backend ...` run printed, and how it exited.
#[derive(Clone, Debug)]
pub struct ControlOutput {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl ControlOutput {
    /// The exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout and stderr together, for looking for a message wherever it was printed.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics (with everything it printed) unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "{self}");
        self
    }
}

impl std::fmt::Display for ControlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// The Cargo workspace root (this crate's parent directory).
pub fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$DIRECTOR_BIN`, else `target/release/director`, else `target/debug/director`.
pub fn director_bin() -> PathBuf {
    find_bin("director", "DIRECTOR_BIN").unwrap_or_else(|e| panic!("{e:#}"))
}

/// `$LBSTAT_BIN`, else `target/release/lbstat`, else `target/debug/lbstat`.
pub fn lbstat_bin() -> PathBuf {
    find_bin("lbstat", "LBSTAT_BIN").unwrap_or_else(|e| panic!("{e:#}"))
}

/// `$RS_DECAP_BIN`, else `target/release/rs-decap`, else `target/debug/rs-decap`.
pub fn rs_decap_bin() -> PathBuf {
    find_bin("rs-decap", "RS_DECAP_BIN").unwrap_or_else(|e| panic!("{e:#}"))
}

/// `$PKTGEN_BIN`, else `target/release/pktgen`, else `target/debug/pktgen`.
pub fn pktgen_bin() -> PathBuf {
    find_bin("pktgen", "PKTGEN_BIN").unwrap_or_else(|e| panic!("{e:#}"))
}

fn find_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("{env}={} is not a file", path.display());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_dir().join("target"), PathBuf::from);
    let candidates = [
        target.join("release").join(name),
        target.join("debug").join(name),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no {name} binary: looked at {} and {}; run `cargo build --release` first \
             (or set {env})",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// How a director stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// From the signal to the process being reaped.
    pub elapsed: Duration,
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether SIGTERM was not enough and SIGKILL followed.
    pub killed: bool,
}

/// `director run` inside a lab's director namespace.
///
/// Dropping it stops the director (SIGTERM, up to 2 s, then SIGKILL); if the thread is
/// panicking, it prints the director's log first, so a failed test shows what the director said.
pub struct DirectorProcess {
    child: Option<ChildGuard>,
    namespace: String,
    log: PathBuf,
    config: PathBuf,
    stats_socket: PathBuf,
    stopped: Option<Stopped>,
}

impl DirectorProcess {
    pub(crate) fn start(lab: &Lab, config: &Path, stats_socket: &Path) -> Result<Self> {
        Self::start_on(lab, Host::Director, config, stats_socket, &[VIP])
    }

    /// `director run` on `host`; ready once its stats socket answers and every address of
    /// `vips` is on its `eth0` (none for a VRRP backup, which never gets them).
    pub(crate) fn start_on(
        lab: &Lab,
        host: Host,
        config: &Path,
        stats_socket: &Path,
        vips: &[&str],
    ) -> Result<Self> {
        let bin = find_bin("director", "DIRECTOR_BIN")?;
        // Some other lab's leftover must not pass for this director being ready.
        let _ = fs::remove_file(stats_socket);
        if let Some(parent) = stats_socket.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let log = lab.new_file(&format!("{host}.log"));
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let bin_s = bin.to_string_lossy();
        let config_s = config.to_string_lossy();
        let mut cmd = lab.command(host, &[&bin_s, "run", "--config", &config_s]);
        cmd.env(
            "RUST_LOG",
            std::env::var("DIRECTOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
        let mut director = Self {
            child: Some(ChildGuard::spawn(cmd)?),
            namespace: lab.namespace(host),
            log,
            config: config.to_path_buf(),
            stats_socket: stats_socket.to_path_buf(),
            stopped: None,
        };
        if let Err(e) = director.wait_ready(vips) {
            let log = director.log();
            director.stop();
            bail!(
                "director ({} run --config {}) did not become ready: {e:#}\n--- director log ---\n{log}--- end ---",
                bin.display(),
                config.display()
            );
        }
        Ok(director)
    }

    /// Ready: the stats socket exists and `lbstat --json` answers, and every address of `vips`
    /// is on `eth0`.
    fn wait_ready(&mut self, vips: &[&str]) -> Result<()> {
        let namespace = self.namespace.clone();
        let socket = self.stats_socket.clone();
        poll_check("director", READY_TIMEOUT, Duration::from_millis(50), || {
            match self.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => return Check::Fatal(format!("it exited: {status}")),
                Err(e) => return Check::Fatal(format!("{e:#}")),
            }
            if !socket.exists() {
                return Check::NotYet(format!("no stats socket at {}", socket.display()));
            }
            if let Err(e) = lbstat_json(&socket) {
                return Check::NotYet(format!("lbstat does not answer: {e:#}"));
            }
            if vips.is_empty() {
                return Check::Ready(());
            }
            let out = run_with_timeout(
                Command::new("ip").args(["-n", &namespace, "-o", "addr", "show", "dev", "eth0"]),
                LBSTAT_TIMEOUT,
            );
            match out {
                Ok(out) => {
                    let shown = String::from_utf8_lossy(&out.stdout);
                    match vips.iter().find(|vip| !has_address(&shown, vip)) {
                        None => Check::Ready(()),
                        Some(vip) => {
                            Check::NotYet(format!("VIP {vip} not on the director's eth0 yet"))
                        }
                    }
                }
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        })
    }

    /// The director's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildGuard::id)
    }

    /// Its stats socket.
    pub fn stats_socket(&self) -> &Path {
        &self.stats_socket
    }

    /// The config file it runs on.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The log file (stdout and stderr, `RUST_LOG=info` unless `DIRECTOR_LOG` says otherwise).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the director logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(stopped) = self.stopped {
            return Ok(Some(stopped.status));
        }
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => bail!("director already reaped"),
        }
    }

    /// `lbstat --socket S --json`, parsed; panics if it fails.
    pub fn stats(&self) -> Value {
        self.try_stats()
            .unwrap_or_else(|e| panic!("lbstat --json: {e:#}"))
    }

    /// `lbstat --socket S --json`, parsed.
    pub fn try_stats(&self) -> Result<Value> {
        lbstat_json(&self.stats_socket)
    }

    /// Stats once at least `connections` flows are counted and the counters stop moving between
    /// two reads 250 ms apart (the director publishes counters periodically, and a client's last
    /// ACKs and FINs arrive after its last response). Gives up after 10 s, printing why, and
    /// returns the last stats read (panics only if lbstat never answered).
    pub fn settled_stats(&self, connections: u64) -> Value {
        let mut previous = None;
        let mut last = None;
        let result = poll_until(
            "director counters to settle",
            Duration::from_secs(10),
            Duration::from_millis(250),
            || {
                let stats = self.try_stats().map_err(|e| format!("{e:#}"))?;
                let backends = crate::stats::backends(&stats);
                let now = (
                    backends.iter().map(|b| b.connections_total).sum::<u64>(),
                    backends.iter().map(|b| b.packets_in).sum::<u64>(),
                    crate::stats::workers_rx_packets(&stats),
                );
                last = Some(stats);
                let settled = now.0 >= connections && previous == Some(now);
                previous = Some(now);
                if settled {
                    Ok(())
                } else {
                    Err(format!("(connections, packets_in, rx_packets) = {now:?}"))
                }
            },
        );
        if let Err(e) = result {
            eprintln!("{e:#}; using the last stats read");
        }
        last.unwrap_or_else(|| panic!("lbstat never answered on {}", self.stats_socket.display()))
    }

    /// `lbstat --socket S` (the human table).
    pub fn lbstat_table(&self) -> Result<String> {
        let out = run_with_timeout(
            Command::new(find_bin("lbstat", "LBSTAT_BIN")?)
                .arg("--socket")
                .arg(&self.stats_socket),
            LBSTAT_TIMEOUT,
        )?;
        check_output("lbstat", &out)
    }

    // ---- live reconfiguration and runtime operations ----

    /// Runs `director ARGS --socket S` in the director's namespace (bounded to 15 s) and returns
    /// what it printed and how it exited, whatever the status.
    pub fn control(&self, args: &[&str]) -> ControlOutput {
        let bin = find_bin("director", "DIRECTOR_BIN").unwrap_or_else(|e| panic!("{e:#}"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace])
            .arg(&bin)
            .args(args)
            .arg("--socket")
            .arg(&self.stats_socket)
            .env("NO_COLOR", "1");
        let command = format!(
            "director {} --socket {}",
            args.join(" "),
            self.stats_socket.display()
        );
        let out = run_with_timeout(&mut cmd, CONTROL_TIMEOUT)
            .unwrap_or_else(|e| panic!("{command}: {e:#}"));
        ControlOutput {
            command,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `director reload`: the director re-reads the config file it was started with.
    pub fn reload(&self) -> ControlOutput {
        self.control(&["reload"])
    }

    /// `director backend weight SERVICE ADDRESS WEIGHT`.
    pub fn backend_weight(&self, service: &str, address: &str, weight: u32) -> ControlOutput {
        self.control(&["backend", "weight", service, address, &weight.to_string()])
    }

    /// `director backend drain SERVICE ADDRESS` (weight 0: no new flows).
    pub fn backend_drain(&self, service: &str, address: &str) -> ControlOutput {
        self.control(&["backend", "drain", service, address])
    }

    /// `director backend disable SERVICE ADDRESS` (out of the pool, its flows rescheduled).
    pub fn backend_disable(&self, service: &str, address: &str) -> ControlOutput {
        self.control(&["backend", "disable", service, address])
    }

    /// `director backend enable SERVICE ADDRESS`.
    pub fn backend_enable(&self, service: &str, address: &str) -> ControlOutput {
        self.control(&["backend", "enable", service, address])
    }

    /// Sends SIGHUP to the director (a reload whose result only its log shows); false if the
    /// process is gone.
    pub fn sighup(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|child| child.signal(libc::SIGHUP))
    }

    /// Replaces the config file the director was started with (atomically: written beside it,
    /// then renamed over it, so a reload never reads half a file). The director notices only on
    /// a reload.
    pub fn replace_config(&self, config: &DirectorConfig) {
        self.replace_config_text(&config.to_toml());
    }

    /// Like [`DirectorProcess::replace_config`], with the text given (for invalid configs).
    pub fn replace_config_text(&self, text: &str) {
        let tmp = self.config.with_extension("toml.new");
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        fs::rename(&tmp, &self.config).unwrap_or_else(|e| {
            panic!(
                "renaming {} to {}: {e}",
                tmp.display(),
                self.config.display()
            )
        });
    }

    /// Polls `lbstat --json` (every 50 ms, at most `timeout`) until `ready` returns `Some`, and
    /// returns that; the error carries the last stats read.
    pub fn wait_for_stats<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Value) -> Option<T>,
    ) -> Result<T> {
        poll_until(what, timeout, Duration::from_millis(50), || {
            let stats = self.try_stats().map_err(|e| format!("{e:#}"))?;
            ready(&stats).ok_or_else(|| format!("lbstat --json: {stats}"))
        })
    }

    /// SIGTERM, wait up to 2 s, then SIGKILL; returns how long it took and the exit status.
    /// Stopping twice returns the first result.
    pub fn stop(&mut self) -> Stopped {
        self.signal_and_reap(libc::SIGTERM, TERM_GRACE)
    }

    /// SIGKILL at once (no chance to clean up); returns the exit status.
    pub fn kill(&mut self) -> Stopped {
        self.signal_and_reap(libc::SIGKILL, Duration::from_secs(5))
    }

    fn signal_and_reap(&mut self, signal: i32, grace: Duration) -> Stopped {
        if let Some(stopped) = self.stopped {
            return stopped;
        }
        let mut child = self
            .child
            .take()
            .expect("an unstopped director has its child");
        let start = Instant::now();
        child.signal(signal);
        let status = child.wait_timeout(grace).ok().flatten();
        let stopped = if let Some(status) = status {
            Stopped {
                elapsed: start.elapsed(),
                status,
                killed: false,
            }
        } else {
            let status = child.kill().unwrap_or_else(|e| panic!("{e:#}"));
            Stopped {
                elapsed: start.elapsed(),
                status,
                killed: true,
            }
        };
        self.stopped = Some(stopped);
        stopped
    }
}

impl Drop for DirectorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- director log ({}) ---\n{}--- end of director log ---",
                self.log.display(),
                self.log()
            );
        }
        if self.child.is_some() {
            self.stop();
        }
        let _ = fs::remove_file(&self.stats_socket);
    }
}

fn lbstat_json(socket: &Path) -> Result<Value> {
    let out = run_with_timeout(
        Command::new(find_bin("lbstat", "LBSTAT_BIN")?)
            .arg("--socket")
            .arg(socket)
            .arg("--json"),
        LBSTAT_TIMEOUT,
    )?;
    let stdout = check_output("lbstat --json", &out)?;
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("lbstat printed no JSON: {stdout:?}"))
}
