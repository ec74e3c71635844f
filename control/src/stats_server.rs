//! The stats/control Unix socket: one JSON [`Request`] per line in, one JSON [`Reply`] per line
//! out (types in `director-proto`).
//!
//! Resources are bounded: one accept thread, at most [`MAX_CLIENTS`] client threads, requests
//! of at most [`MAX_REQUEST_BYTES`], and read/write timeouts so a stuck client only ever holds
//! its own thread (and only until [`IDLE_TIMEOUT`]). A bad request gets a [`Reply::Error`] and
//! never affects the server or other clients.
//!
//! Access: the socket file gets [`SocketAccess::mode`] (default 0660) and, if configured, the
//! group [`SocketAccess::group`]; whoever can connect may read stats, and mutating requests are
//! served only for peers the [`AccessPolicy`] allows (root, the director's user, the group),
//! checked here before the handler sees them.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use director_proto::{Reply, Request, MAX_REQUEST_BYTES};

use crate::access::{self, AccessPolicy, Peer};

/// Answers one request from `peer`. Called on a client thread; may block briefly (e.g. to read
/// counters). Mutating requests reach it only from peers the server's policy allows.
pub type Handler = Arc<dyn Fn(Request, &Peer) -> Reply + Send + Sync>;

/// Who may connect (file mode and group) and who may change state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits of the socket file.
    pub mode: u32,
    /// User that owns the socket file and may send mutating requests (name or number).
    pub owner: Option<String>,
    /// Group that owns the socket file and may send mutating requests (name or number).
    pub group: Option<String>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: DEFAULT_SOCKET_MODE,
            owner: None,
            group: None,
        }
    }
}

/// Most clients served at once; the next one gets an error reply and is closed.
pub const MAX_CLIENTS: usize = 16;
/// A client that sends no complete request for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle threads look at the stop flag: the bound on how long shutdown takes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// A client that does not read its reply for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default permissions of the socket file: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Why the stats socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StatsServerError {
    /// The socket's directory could not be created.
    #[error("cannot create directory {} for the stats socket: {source}", path.display())]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Another process (a director still running) answers on the socket.
    #[error("stats socket {} is in use: is another director running?", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// `stats_socket_group` names no group on this system.
    #[error("stats socket {}: group {group:?}: {source}", path.display())]
    UnknownGroup {
        /// The socket.
        path: PathBuf,
        /// The configured group.
        group: String,
        /// Why the lookup failed.
        #[source]
        source: io::Error,
    },
    /// `stats_socket_owner` names no user on this system.
    #[error("stats socket {}: user {user:?}: {source}", path.display())]
    UnknownUser {
        /// The socket.
        path: PathBuf,
        /// The configured user.
        user: String,
        /// Why the lookup failed.
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket is in the way; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A socket operation (removing a stale socket, binding, setting permissions) failed.
    #[error("stats socket {}: cannot {operation}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// A running stats socket. Dropping it (or [`StatsServer::shutdown`]) stops every thread within
/// about 100 ms and removes the socket file.
#[derive(Debug)]
pub struct StatsServer {
    path: PathBuf,
    /// (device, inode) of the socket we bound, so we never remove someone else's.
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl StatsServer {
    /// [`StatsServer::start_with`] the default access: mode 0660, no group.
    pub fn start(path: &Path, handler: Handler) -> Result<Self, StatsServerError> {
        Self::start_with(path, &SocketAccess::default(), handler)
    }

    /// Binds `path` (creating its directory, replacing a stale socket left by a dead director),
    /// gives it `access`'s mode and group, and serves requests with `handler` until dropped.
    pub fn start_with(
        path: &Path,
        access: &SocketAccess,
        handler: Handler,
    ) -> Result<Self, StatsServerError> {
        let io_error = |operation: &'static str| {
            move |source: io::Error| StatsServerError::Io {
                path: path.to_owned(),
                operation,
                source,
            }
        };
        let group = match &access.group {
            None => None,
            Some(name) => Some((
                name.clone(),
                access::group_id(name).map_err(|source| StatsServerError::UnknownGroup {
                    path: path.to_owned(),
                    group: name.clone(),
                    source,
                })?,
            )),
        };
        let socket_owner = match &access.owner {
            None => None,
            Some(name) => Some((
                name.clone(),
                access::user_id(name).map_err(|source| StatsServerError::UnknownUser {
                    path: path.to_owned(),
                    user: name.clone(),
                    source,
                })?,
            )),
        };
        let policy = Arc::new(AccessPolicy {
            owner_uid: access::effective_uid(),
            socket_owner,
            group,
        });
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs::create_dir_all(parent).map_err(|source| StatsServerError::CreateDirectory {
                path: parent.to_owned(),
                source,
            })?;
        }
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(StatsServerError::InUse {
                        path: path.to_owned(),
                    });
                }
                tracing::info!(path = %path.display(), "removing stale stats socket");
                fs::remove_file(path).map_err(io_error("remove the stale socket"))?;
            }
            Ok(_) => {
                return Err(StatsServerError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("inspect the path")(error)),
        }
        let listener = UnixListener::bind(path).map_err(io_error("bind"))?;
        let metadata = fs::metadata(path).map_err(io_error("inspect the socket"))?;
        let identity = (metadata.dev(), metadata.ino());
        let cleanup = |error: StatsServerError| {
            let _ = fs::remove_file(path);
            error
        };
        let uid = policy.socket_owner.as_ref().map(|(_, uid)| *uid);
        let gid = policy.group.as_ref().map(|(_, gid)| *gid);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid)
                .map_err(io_error("change its owner or group"))
                .map_err(cleanup)?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(access.mode & 0o7777))
            .map_err(io_error("set permissions"))
            .map_err(cleanup)?;
        listener
            .set_nonblocking(true)
            .map_err(io_error("set non-blocking"))
            .map_err(cleanup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept_thread = std::thread::Builder::new()
            .name("stats-accept".to_owned())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &handler, &policy, &stop)
            })
            .map_err(io_error("start the accept thread"))
            .map_err(cleanup)?;
        tracing::info!(path = %path.display(), "stats socket listening");
        Ok(StatsServer {
            path: path.to_owned(),
            identity,
            stop,
            accept_thread: Some(accept_thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file (what dropping does, made explicit).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(thread) = self.accept_thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        // Remove the file only if it is still the socket we bound.
        if let Ok(metadata) = fs::symlink_metadata(&self.path) {
            if (metadata.dev(), metadata.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Accepts clients until `stop`, then waits for their threads (each sees `stop` within
/// [`POLL_INTERVAL`]).
fn accept_loop(
    listener: &UnixListener,
    handler: &Handler,
    policy: &Arc<AccessPolicy>,
    stop: &Arc<AtomicBool>,
) {
    let clients = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        threads.retain(|thread| !thread.is_finished());
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(%error, "stats socket accept failed");
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let _ = stream.set_nonblocking(true);
            let _ = write_reply(
                &stream,
                &error_reply(format!(
                    "too many clients (at most {MAX_CLIENTS}), try again"
                )),
            );
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot(Arc::clone(&clients));
        let handler = Arc::clone(handler);
        let policy = Arc::clone(policy);
        let stop = Arc::clone(stop);
        let spawned = std::thread::Builder::new()
            .name("stats-client".to_owned())
            .spawn(move || {
                let _slot = slot;
                if let Err(error) = serve_client(&stream, &handler, &policy, &stop) {
                    tracing::debug!(%error, "stats client closed");
                }
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => tracing::warn!(%error, "cannot start a stats client thread"),
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// Frees a client slot when its thread ends, however it ends.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads request lines and answers each until EOF, an error, idleness, an oversized request or
/// `stop`.
fn serve_client(
    stream: &UnixStream,
    handler: &Handler,
    policy: &AccessPolicy,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Without credentials the peer counts as nobody in particular: stats only.
    let peer = Peer::of(stream).unwrap_or(Peer {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
        groups: Vec::new(),
    });
    let client = Client {
        stream,
        handler,
        policy,
        peer: &peer,
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut reader = stream;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut last_activity = Instant::now();
    loop {
        // Answer every complete line already buffered.
        while let Some(newline) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            client.answer(&line[..newline])?;
            last_activity = Instant::now();
        }
        if pending.len() > MAX_REQUEST_BYTES {
            write_reply(
                stream,
                &error_reply(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
            )?;
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match reader.read(&mut chunk) {
            Ok(0) => {
                // EOF: a last request without a newline still gets its answer.
                if !pending.is_empty() {
                    client.answer(&pending)?;
                }
                return Ok(());
            }
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_activity.elapsed() > IDLE_TIMEOUT {
                    let _ = write_reply(
                        stream,
                        &error_reply("idle for too long, closing".to_owned()),
                    );
                    return Ok(());
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// One connected client and what serves it.
struct Client<'a> {
    stream: &'a UnixStream,
    handler: &'a Handler,
    policy: &'a AccessPolicy,
    peer: &'a Peer,
}

impl Client<'_> {
    /// Parses one request line, checks the peer may make it, and writes the handler's reply (or
    /// an error reply).
    fn answer(&self, line: &[u8]) -> io::Result<()> {
        let reply = match parse_request(line) {
            None => return Ok(()),
            Some(Ok(request)) => self.serve(request),
            Some(Err(message)) => error_reply(message),
        };
        write_reply(self.stream, &reply)
    }

    fn serve(&self, request: Request) -> Reply {
        if request.is_mutating() {
            if let Err(message) = self.policy.check_mutation(self.peer) {
                tracing::warn!(peer = %self.peer.describe(), ?request, "control request refused: {message}");
                return error_reply(message);
            }
        }
        catch_unwind(AssertUnwindSafe(|| (self.handler)(request, self.peer)))
            .unwrap_or_else(|_| error_reply("internal error while serving the request".to_owned()))
    }
}

/// One request line (its newline removed): `None` for a blank line, which gets no answer, else
/// the request or the message of the error reply it gets. Separate from [`Client`] so that the
/// fuzzing harness (`crate::fuzzing`) parses exactly what the server parses.
pub(crate) fn parse_request(line: &[u8]) -> Option<Result<Request, String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(if line.len() > MAX_REQUEST_BYTES {
        Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
    } else {
        serde_json::from_slice::<Request>(line).map_err(|error| format!("bad request: {error}"))
    })
}

fn error_reply(message: String) -> Reply {
    Reply::Error { message }
}

fn write_reply(mut stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(reply).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}
