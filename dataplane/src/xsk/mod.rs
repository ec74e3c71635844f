//! AF_XDP sockets: one UMEM shared by a socket per port (an interface queue), with every frame
//! accounted.
//!
//! [`Xsk::open`] makes one port: one socket on one (interface, queue), with the UMEM's own fill,
//! completion, RX and TX rings. [`Xsk::open_pair`] makes two, [`CLIENT`] and [`SERVER`], on two
//! interfaces (LVS-NAT: the director sits between the clients and the real servers). The second
//! socket joins the first one's UMEM (`XDP_SHARED_UMEM`) with a fill and a completion ring of its
//! own, as the kernel requires for another device or queue, so a frame received on one port can
//! be transmitted on the other from the very chunk it arrived in: no copy between interfaces.
//! UMEM addresses mean the same on both ports.
//!
//! A UMEM frame is always in exactly one place: our free list, a port's fill ring (lent to the
//! kernel for receiving on that port), our hands (between `receive` and `transmit`/`recycle`,
//! whichever port it came from), or a port's TX ring (lent to the kernel until it shows up on
//! the completion ring of the port it was sent on). A frame in our hands is an [`RxFrame`]
//! (`frame`), a handle that `transmit` or `recycle` consumes, so the compiler rules out giving a
//! chunk back twice. [`FrameAccounting`] exposes the counts so tests can prove nothing leaks.
//!
//! This is the only module, with `xdp`, that touches kernel-shared memory; it must not know
//! about packets, services or policy.

mod frame;

use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

pub use frame::{Drain, Frames, RxFrame};

/// The port on the clients' side, and the only port of an [`Xsk::open`] socket (where one
/// interface serves both sides: DR, TUN, one-armed NAT).
pub const CLIENT: usize = 0;
/// The port on the real servers' side of an [`Xsk::open_pair`] socket (LVS-NAT).
pub const SERVER: usize = 1;
/// Most ports one [`Xsk`] has.
pub const MAX_PORTS: usize = 2;

/// Sizes of one [`Xsk`]'s UMEM (shared by its ports) and of each port's rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame (2048 or 4096; one frame holds one packet).
    pub frame_size: u32,
    /// Frames in the UMEM, for all ports together.
    pub frame_count: u32,
    /// Entries in each of the fill, completion, RX and TX rings of every port (a power of two).
    pub ring_size: u32,
}

impl Default for XskConfig {
    /// Sized for one port ([`Xsk::open`]): [`XskConfig::for_ports`]`(1)`.
    fn default() -> Self {
        XskConfig::for_ports(1)
    }
}

impl XskConfig {
    /// Frames of 4 KiB and rings of 2048 entries, with 4096 frames (16 MiB) per port: each
    /// port's fill ring can be full while its TX ring is full in flight, so no port waits for
    /// frames another one holds. `ports` 0 counts as 1.
    pub const fn for_ports(ports: u32) -> XskConfig {
        let ports = if ports == 0 { 1 } else { ports };
        XskConfig {
            frame_size: 4096,
            frame_count: 4096 * ports,
            ring_size: 2048,
        }
    }

    /// Checks the sizes for an [`Xsk`] with `ports` ports.
    fn validate(&self, ports: usize) -> Result<(), XskError> {
        if !self.frame_size.is_power_of_two() || !(2048..=65536).contains(&self.frame_size) {
            return Err(XskError::Config(
                "frame_size must be a power of two between 2048 and 65536",
            ));
        }
        if !self.ring_size.is_power_of_two() {
            return Err(XskError::Config("ring_size must be a power of two"));
        }
        if u64::from(self.frame_count) < 2 * u64::from(self.ring_size) * ports as u64 {
            return Err(XskError::Config(
                "frame_count must be at least 2 x ring_size x ports, so that every port's fill \
                 ring can be full while its TX ring is in flight (XskConfig::for_ports sizes it)",
            ));
        }
        Ok(())
    }
}
/// Why a socket (or one of a pair) could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The configuration cannot work.
    #[error("invalid AF_XDP socket configuration: {0}")]
    Config(&'static str),
    /// mmap of the UMEM area failed.
    #[error("allocating the {bytes}-byte UMEM: {source}")]
    Mmap {
        /// Size requested.
        bytes: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A step of socket set-up failed.
    #[error("AF_XDP {step} on interface index {ifindex} queue {queue}: errno {errno}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// Interface index.
        ifindex: u32,
        /// Queue.
        queue: u32,
        /// The kernel's errno.
        errno: i32,
    },
}

/// Where the UMEM's frames are right now, over all ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAccounting {
    /// Frames in the UMEM.
    pub total: u32,
    /// On our free list.
    pub free: u32,
    /// Lent to the kernel on the fill rings (or received but not yet read by us).
    pub in_fill: u32,
    /// Lent to the kernel on the TX rings, not yet completed.
    pub in_tx: u32,
    /// Received and not yet transmitted or recycled.
    pub in_hand: u32,
}

impl FrameAccounting {
    /// True when every frame is in exactly one place.
    pub fn is_balanced(&self) -> bool {
        self.free + self.in_fill + self.in_tx + self.in_hand == self.total
    }
}

/// The kernel's per-socket counters (`getsockopt(XDP_STATISTICS)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelXskStats {
    /// Frames dropped by the kernel for lack of a fill-ring frame or other reasons.
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel needed a frame.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

impl std::ops::AddAssign for KernelXskStats {
    /// Adds another socket's counters (a worker publishes the sum over its ports).
    fn add_assign(&mut self, other: KernelXskStats) {
        self.rx_dropped += other.rx_dropped;
        self.rx_invalid_descs += other.rx_invalid_descs;
        self.tx_invalid_descs += other.tx_invalid_descs;
        self.rx_ring_full += other.rx_ring_full;
        self.rx_fill_ring_empty_descs += other.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += other.tx_ring_empty_descs;
    }
}

/// Anonymous memory for the UMEM, unmapped on drop: 2 MiB-aligned and backed by transparent
/// huge pages where the kernel allows ([`crate::memory`]), populated up front. The worker reads
/// the headers of every frame it receives, each in a chunk of its own: on 4 KiB pages nearly
/// every frame is another page and, at a few thousand chunks, another TLB miss; on 2 MiB pages
/// the whole UMEM takes a handful of TLB entries, as DPDK's mempools on hugetlbfs do.
struct UmemArea {
    base: NonNull<u8>,
    /// Usable bytes (what the UMEM is registered with).
    len: usize,
    /// Bytes mapped: `len` rounded up to a huge page.
    mapped: usize,
}

impl UmemArea {
    fn new(len: usize) -> Result<Self, XskError> {
        let failed = |source| XskError::Mmap { bytes: len, source };
        let mapped = crate::memory::mapped_len(len)
            .ok_or_else(|| failed(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
        let base = crate::memory::map_huge(mapped)
            .ok_or_else(|| failed(std::io::Error::last_os_error()))?;
        Ok(UmemArea { base, len, mapped })
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: `base`/`mapped` are exactly the mapping made in `new`, and the sockets that
        // shared it with the kernel (dropped before this field) no longer use it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.mapped);
        }
    }
}

/// One socket of an [`Xsk`]: its four rings on one (interface, queue) and the frames lent to
/// the kernel through them.
struct Port {
    // Field order is drop order: the rings before the socket they were mapped from.
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: User,
    /// Frames on this port's fill ring or received on its RX ring and not yet read.
    in_fill: u32,
    /// Frames on this port's TX ring, not yet seen on its completion ring.
    in_tx: u32,
}

impl Port {
    /// Sets up `socket`'s rings on `umem` and binds it. The UMEM's own socket (the first port)
    /// binds with `bind_flags`; any other is bound with `XDP_SHARED_UMEM` to the UMEM's socket by
    /// xdpilone and must pass no flags of its own (the kernel refuses them: the new port inherits
    /// copy or zero-copy mode and need_wakeup from the UMEM's socket).
    fn bind(
        umem: &Umem,
        socket: &Socket,
        ring_size: u32,
        bind_flags: u16,
        side: Side,
    ) -> Result<Port, XskError> {
        let setup = |step| side.error(step);
        let device = umem.fq_cq(socket).map_err(setup("fill/completion rings"))?;
        let ring = NonZeroU32::new(ring_size);
        let user = umem
            .rx_tx(
                socket,
                &SocketConfig {
                    rx_size: ring,
                    tx_size: ring,
                    bind_flags,
                },
            )
            .map_err(setup("RX/TX rings"))?;
        let rx = user.map_rx().map_err(setup("mapping the RX ring"))?;
        let tx = user.map_tx().map_err(setup("mapping the TX ring"))?;
        umem.bind(&user).map_err(setup("bind"))?;
        Ok(Port {
            rx,
            tx,
            device,
            user,
            in_fill: 0,
            in_tx: 0,
        })
    }
}

/// One (interface, queue) a port is on, to name it in set-up errors.
#[derive(Clone, Copy)]
struct Side {
    ifindex: u32,
    queue: u32,
}

impl Side {
    /// How a failed set-up `step` for this side becomes an [`XskError::Setup`].
    fn error(self, step: &'static str) -> impl FnOnce(xdpilone::Errno) -> XskError {
        move |errno| XskError::Setup {
            step,
            ifindex: self.ifindex,
            queue: self.queue,
            errno: errno.get_raw(),
        }
    }
}

/// AF_XDP sockets on one or two interface queues ([`CLIENT`], [`SERVER`]) sharing one UMEM.
pub struct Xsk {
    // Field order is drop order: rings and sockets go before the UMEM registration, and the
    // memory itself goes last.
    ports: Vec<Port>,
    _umem: Umem,
    area: UmemArea,
    free: Vec<u64>,
    frame_mask: u64,
    frame_size: usize,
    frame_count: u32,
    ring_size: u32,
    in_hand: u32,
    /// The port [`Xsk::refill`] serves first next time (it takes turns).
    next_refill: usize,
    /// Tags this socket's [`RxFrame`]s, so a frame of another socket is never taken for one of
    /// its own (never 0, the tag of no socket).
    id: u32,
}

/// The next [`Xsk`]'s `id`.
static NEXT_XSK_ID: AtomicU32 = AtomicU32::new(1);

// SAFETY: the rings and UMEM are plain memory plus file descriptors; an `Xsk` is moved into its
// worker thread once and used only there.
#[allow(unsafe_code)]
unsafe impl Send for Xsk {}

impl Xsk {
    /// Creates a socket on `ifindex`/`queue` and binds it (the kernel picks zero-copy or copy
    /// mode): one port, [`CLIENT`]. Frames only arrive once the socket is registered in the
    /// classifier's XSKMAP.
    pub fn open(ifindex: u32, queue: u32, config: XskConfig) -> Result<Self, XskError> {
        Xsk::open_ports(&[(ifindex, queue)], config)
    }

    /// Creates two sockets sharing one UMEM: port [`CLIENT`] on `client` and port [`SERVER`] on
    /// `server`, each an (ifindex, queue). The client side's socket owns the UMEM and picks the
    /// mode; the server side's joins it with `XDP_SHARED_UMEM` and gets the same mode, so both
    /// interfaces must support it (zero-copy on one and copy on the other fails to bind).
    /// `config.frame_count` must be at least 2 x `ring_size` x 2 ([`XskConfig::for_ports`]).
    /// Frames only arrive once each socket is registered in its interface's XSKMAP.
    pub fn open_pair(
        client: (u32, u32),
        server: (u32, u32),
        config: XskConfig,
    ) -> Result<Self, XskError> {
        if client == server {
            return Err(XskError::Config(
                "the client and server sides of a socket pair must not be the same interface \
                 queue",
            ));
        }
        Xsk::open_ports(&[client, server], config)
    }

    fn open_ports(sides: &[(u32, u32)], config: XskConfig) -> Result<Self, XskError> {
        config.validate(sides.len())?;
        let Some(&(ifindex, queue)) = sides.first() else {
            return Err(XskError::Config("a socket needs at least one port"));
        };
        let first = Side { ifindex, queue };

        let area_len = config.frame_size as usize * config.frame_count as usize;
        let area = UmemArea::new(area_len)?;
        let umem_config = UmemConfig {
            fill_size: config.ring_size,
            complete_size: config.ring_size,
            frame_size: config.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page aligned, `area_len` bytes long, and outlives `umem` (see the
        // field order of `Xsk`; on an error below, locals drop in reverse order, `umem` first);
        // nothing but the kernel and this `Xsk` reads or writes it.
        let umem = unsafe {
            Umem::new(
                umem_config,
                NonNull::slice_from_raw_parts(area.base, area_len),
            )
        }
        .map_err(first.error("UMEM registration"))?;

        let mut ports = Vec::with_capacity(sides.len());
        for (index, &(ifindex, queue)) in sides.iter().enumerate() {
            let side = Side { ifindex, queue };
            let setup = |step| side.error(step);
            let mut info = IfInfo::invalid();
            info.from_ifindex(ifindex)
                .map_err(setup("interface lookup"))?;
            info.set_queue(queue);
            let port = if index == 0 {
                // The UMEM's own socket: its fill/completion rings and RX/TX rings.
                let socket = Socket::with_shared(&info, &umem).map_err(setup("socket"))?;
                Port::bind(
                    &umem,
                    &socket,
                    config.ring_size,
                    SocketConfig::XDP_BIND_NEED_WAKEUP,
                    side,
                )?
            } else {
                // Another device or queue: a socket of its own with its own fill/completion
                // rings, bound to the UMEM's socket with XDP_SHARED_UMEM (set by `Umem::bind`).
                let socket = Socket::new(&info).map_err(setup("socket"))?;
                Port::bind(&umem, &socket, config.ring_size, 0, side)?
            };
            ports.push(port);
        }

        // xdpilone opens the sockets without SOCK_CLOEXEC: a program the director runs (an exec
        // health check) would inherit them and could keep the queues bound after the director
        // is gone.
        for port in &ports {
            // SAFETY: fcntl(2) on a descriptor this process owns, with an integer argument.
            if unsafe { libc::fcntl(port.rx.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(first.error("setting close-on-exec")(
                    xdpilone::Errno::last_os_error(),
                ));
            }
        }
        let free = (0..u64::from(config.frame_count))
            .rev()
            .map(|frame| frame * u64::from(config.frame_size))
            .collect();
        let mut xsk = Xsk {
            ports,
            _umem: umem,
            area,
            free,
            frame_mask: !(u64::from(config.frame_size) - 1),
            frame_size: config.frame_size as usize,
            frame_count: config.frame_count,
            ring_size: config.ring_size,
            in_hand: 0,
            next_refill: 0,
            id: NEXT_XSK_ID.fetch_add(1, Ordering::Relaxed),
        };
        xsk.refill();
        Ok(xsk)
    }

    /// How many ports (sockets) share the UMEM: 1 from [`Xsk::open`], 2 from
    /// [`Xsk::open_pair`].
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// The other port, where frames verdicted [`crate::pipeline::Egress::Peer`] leave; `None`
    /// with one port.
    pub fn peer(&self, port: usize) -> Option<usize> {
        match (self.ports.len(), port) {
            (2, CLIENT) => Some(SERVER),
            (2, SERVER) => Some(CLIENT),
            _ => None,
        }
    }

    /// The socket's file descriptor of `port`, for the XSKMAP of that port's interface.
    /// Borrowed: do not close it. Panics if `port >= port_count()`, as do all methods taking a
    /// port.
    pub fn fd(&self, port: usize) -> RawFd {
        self.ports[port].rx.as_raw_fd()
    }

    /// Lends free frames to the kernel on every port's fill ring. Returns how many were added.
    ///
    /// The free frames are shared out fairly: each port in turn (starting from a different one
    /// each call) is offered an equal share of what is left, and takes no more than its fill ring
    /// has room for; what it leaves goes to the ports after it. So a port whose ring drains fast
    /// cannot take the frames another port needs to keep receiving.
    pub fn refill(&mut self) -> u32 {
        let count = self.ports.len();
        let first = self.next_refill;
        self.next_refill = (first + 1) % count;
        let mut added = 0;
        for turn in 0..count {
            let left = self.free.len();
            if left == 0 {
                break;
            }
            let share = left.div_ceil(count - turn).min(u32::MAX as usize) as u32;
            let port = &mut self.ports[(first + turn) % count];
            let mut writer = port.device.fill(share);
            // `insert` zips the iterator with the free slots and would swallow one extra item,
            // so it gets exactly as many frames as there are slots.
            let start = self.free.len() - writer.capacity() as usize;
            let taken = writer.insert(self.free.drain(start..));
            writer.commit();
            port.in_fill += taken;
            added += taken;
        }
        added
    }

    /// Takes up to `max` frames received on `port` (no more than `frames` has room for) and
    /// adds them to `frames`; they are ours until transmitted (on either port) or recycled.
    /// Returns how many were added.
    pub fn receive<const N: usize>(
        &mut self,
        port: usize,
        frames: &mut Frames<N>,
        max: usize,
    ) -> usize {
        let socket = &mut self.ports[port];
        let want = max.min(frames.room());
        let mut reader = socket.rx.receive(want as u32);
        let mut count = 0;
        while count < want {
            let Some(desc) = reader.read() else { break };
            frames.push_received(desc, self.id);
            count += 1;
        }
        reader.release();
        drop(reader);
        socket.in_fill -= count as u32;
        self.in_hand += count as u32;
        // As xdpsock does: poll only when nothing arrived and the driver asked for a wake-up
        // (zero-copy drivers set the flag when their fill ring ran dry; copy mode never does).
        if count == 0 && socket.device.needs_wakeup() {
            socket.device.wake();
        }
        count
    }

    /// The whole UMEM chunk a received frame lies in, and where the frame starts in it. The
    /// bytes before the frame are headroom (at least `XDP_PACKET_HEADROOM`, 256) that a rewrite
    /// may grow into; `None` if the descriptor points outside the UMEM or the frame is another
    /// socket's.
    pub fn chunk_mut(&mut self, frame: &RxFrame) -> Option<(&mut [u8], usize)> {
        let desc = &frame.desc;
        if frame.owner != self.id {
            return None;
        }
        let base = usize::try_from(desc.addr & self.frame_mask).ok()?;
        let start = usize::try_from(desc.addr).ok()? - base;
        let end = base.checked_add(self.frame_size)?;
        if end > self.area.len || start + desc.len as usize > self.frame_size {
            return None;
        }
        // SAFETY: [base, end) is one chunk inside the mapping. `frame` is an `RxFrame` of this
        // socket (checked above), made only by `receive` from a descriptor an RX ring (of either
        // port: they share the UMEM) handed over, and not yet consumed by `transmit` or
        // `recycle` (they take it by value): so the kernel no longer writes the chunk, and no
        // other handle names it. `&mut self` rules out a second live view of any chunk.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(self.area.base.as_ptr().add(base), self.frame_size)
        };
        Some((chunk, start))
    }

    /// The bytes of a received frame, read-only (for a look ahead at frames not yet processed);
    /// `None` if the descriptor points outside the UMEM or the frame is another socket's.
    #[inline]
    pub fn frame(&self, frame: &RxFrame) -> Option<&[u8]> {
        let desc = &frame.desc;
        if frame.owner != self.id {
            return None;
        }
        let base = usize::try_from(desc.addr & self.frame_mask).ok()?;
        let start = usize::try_from(desc.addr).ok()?;
        let end = start.checked_add(desc.len as usize)?;
        if end > self.area.len || end > base + self.frame_size {
            return None;
        }
        // SAFETY: [start, end) lies in one chunk inside the mapping, holding a frame of this
        // socket (checked above) that an RX ring handed to us and that no `transmit` or
        // `recycle` has consumed yet (`RxFrame` is their only way in), so the kernel no longer
        // writes it; `&self` rules out a mutable view.
        Some(unsafe {
            std::slice::from_raw_parts(self.area.base.as_ptr().add(start), desc.len as usize)
        })
    }

    /// Hints the CPU to load the first cache line of a received frame (its headers). Does
    /// nothing for a descriptor outside the UMEM.
    #[inline]
    pub fn prefetch(&self, frame: &RxFrame) {
        if let Some(first) = self.frame(frame).and_then(<[u8]>::first) {
            crate::memory::prefetch(first);
        }
    }

    /// Records that a received frame now lies at bytes `start..start + len` of its chunk (where
    /// a rewrite left it), for transmission on any port. Refuses (returns false, leaving the
    /// frame as it was) a range outside the chunk or another socket's frame: the handle must
    /// keep naming its own chunk, or `recycle` would hand the kernel a chunk that another
    /// `RxFrame` still holds.
    #[inline]
    #[must_use]
    pub fn reframe(&self, frame: &mut RxFrame, start: usize, len: usize) -> bool {
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= self.frame_size);
        if frame.owner != self.id || !fits {
            return false;
        }
        frame.desc = XdpDesc {
            addr: (frame.desc.addr & self.frame_mask) + start as u64,
            len: len as u32,
            options: 0,
        };
        true
    }

    /// Queues frames for transmission on `port` (received on any port of this socket). The TX
    /// ring takes a prefix of `frames`, which leaves the batch; what it did not take stays in
    /// `frames` for the caller to recycle. Returns how many were taken.
    ///
    /// Panics if a frame is another socket's (a bug in the caller, like a port out of range).
    pub fn transmit<const N: usize>(&mut self, port: usize, frames: &mut Frames<N>) -> usize {
        if frames.is_empty() {
            return 0;
        }
        assert!(
            frames.iter().all(|frame| frame.owner == self.id),
            "transmitting a frame received by another AF_XDP socket"
        );
        let socket = &mut self.ports[port];
        let queued = frames.len();
        // A reservation is served from a cached view of the kernel's consumer head and may come
        // back short while the ring has room; the second attempt refreshes that view.
        let mut sent = 0;
        for _ in 0..2 {
            let mut writer = socket.tx.transmit((queued - sent) as u32);
            sent += writer.insert(frames.descs().skip(sent)) as usize;
            writer.commit();
            if sent == queued {
                break;
            }
        }
        frames.remove_front(sent);
        self.in_hand -= sent as u32;
        socket.in_tx += sent as u32;
        sent
    }

    /// Returns a received frame to the free list (a dropped frame).
    ///
    /// Panics if the frame is another socket's (a bug in the caller, like a port out of range).
    #[expect(
        clippy::needless_pass_by_value,
        reason = "taking the handle by value is the point: the frame cannot be used again"
    )]
    pub fn recycle(&mut self, frame: RxFrame) {
        assert_eq!(
            frame.owner, self.id,
            "recycling a frame received by another AF_XDP socket"
        );
        self.free.push(frame.desc.addr & self.frame_mask);
        self.in_hand -= 1;
    }

    /// Moves frames the kernel finished transmitting, on every port, back to the free list. A
    /// frame completes on the completion ring of the port it was sent on.
    pub fn reap_completions(&mut self) -> u32 {
        let mut reaped = 0;
        for port in &mut self.ports {
            let mut reader = port.device.complete(port.in_tx);
            let mut done = 0;
            while let Some(address) = reader.read() {
                self.free.push(address & self.frame_mask);
                done += 1;
            }
            reader.release();
            drop(reader);
            port.in_tx -= done;
            reaped += done;
        }
        reaped
    }

    /// Kicks the kernel to send what is on each port's TX ring, for each port whose ring has
    /// descriptors pending and that asked to be woken (need_wakeup). In copy mode the kernel
    /// always asks and one kick sends at most 32 frames, so the worker calls this every loop
    /// iteration while anything is pending, and a port with nothing pending is never kicked.
    /// Returns how many syscalls were made.
    pub fn kick_tx(&mut self) -> u32 {
        let mut kicks = 0;
        for port in &self.ports {
            if port.tx.pending() != 0 && port.tx.needs_wakeup() {
                port.tx.wake();
                kicks += 1;
            }
        }
        kicks
    }

    /// Sleeps until a frame is waiting on any port's RX ring or `timeout_ms` passes (poll(2) on
    /// the sockets, as xdpsock's `-p` does). Returns whether anything is readable. For an idle
    /// worker only: a syscall, so never per packet.
    pub fn wait_readable(&self, timeout_ms: i32) -> bool {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_PORTS];
        for (entry, port) in fds.iter_mut().zip(&self.ports) {
            entry.fd = port.rx.as_raw_fd();
            entry.events = libc::POLLIN;
        }
        // SAFETY: `fds` is a live array of `ports.len()` initialised pollfd entries (the rest
        // are never passed), which poll(2) only writes `revents` of.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                self.ports.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        ready > 0
    }

    /// Frames not yet seen on a completion ring, over all ports.
    pub fn tx_in_flight(&self) -> u32 {
        self.ports.iter().map(|port| port.in_tx).sum()
    }

    /// Frames lent to the kernel for receiving on `port` (on its fill ring, or received and not
    /// yet read).
    pub fn in_fill(&self, port: usize) -> u32 {
        self.ports[port].in_fill
    }

    /// Free entries on `port`'s TX ring: how many frames [`Xsk::transmit`] would take now.
    pub fn tx_room(&self, port: usize) -> u32 {
        self.ring_size.saturating_sub(self.ports[port].tx.pending())
    }

    /// Frames on `port`'s TX ring, not yet completed.
    pub fn in_tx(&self, port: usize) -> u32 {
        self.ports[port].in_tx
    }

    /// Where every frame is, summed over the ports.
    pub fn accounting(&self) -> FrameAccounting {
        FrameAccounting {
            total: self.frame_count,
            free: self.free.len() as u32,
            in_fill: self.ports.iter().map(|port| port.in_fill).sum(),
            in_tx: self.tx_in_flight(),
            in_hand: self.in_hand,
        }
    }

    /// True when no frame sits on the free list twice (a double recycle or a bogus completion
    /// would break this). Sorts a copy: for tests and diagnostics, not the hot path.
    pub fn free_list_is_unique(&self) -> bool {
        let mut frames = self.free.clone();
        frames.sort_unstable();
        frames.windows(2).all(|pair| pair[0] != pair[1])
    }

    /// The kernel's counters for `port`'s socket.
    pub fn kernel_stats(&self, port: usize) -> Option<KernelXskStats> {
        let stats = self.ports[port].user.statistics_v2().ok()?;
        Some(KernelXskStats {
            rx_dropped: stats.rx_dropped,
            rx_invalid_descs: stats.rx_invalid_descs,
            tx_invalid_descs: stats.tx_invalid_descs,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty_descs: stats.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: stats.tx_ring_empty_descs,
        })
    }
}
