//! AF_XDP sockets: one UMEM and its four rings per (interface, queue), with every frame accounted.
//!
//! A UMEM frame is always in exactly one place: our free list, the fill ring (lent to the kernel
//! for receiving), our hands (between `receive` and `transmit`/`recycle`), or the TX ring (lent
//! to the kernel until it shows up on the completion ring). [`FrameAccounting`] exposes the
//! counts so tests can prove nothing leaks.
//!
//! This is the only module, with `xdp`, that touches kernel-shared memory; it must not know
//! about packets, services or policy.

use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

/// Sizes of one socket's UMEM and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame (2048 or 4096; one frame holds one packet).
    pub frame_size: u32,
    /// Frames in the UMEM.
    pub frame_count: u32,
    /// Entries in each of the fill, completion, RX and TX rings (a power of two).
    pub ring_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        // 4096 frames of 4 KiB (16 MiB): the rings (2 x 2048) never hold more than the UMEM, so
        // the fill ring can always be topped up while a full TX ring is in flight.
        XskConfig {
            frame_size: 4096,
            frame_count: 4096,
            ring_size: 2048,
        }
    }
}

/// Why a socket could not be set up.
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

/// Where the UMEM's frames are right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAccounting {
    /// Frames in the UMEM.
    pub total: u32,
    /// On our free list.
    pub free: u32,
    /// Lent to the kernel on the fill ring (or received but not yet read by us).
    pub in_fill: u32,
    /// Lent to the kernel on the TX ring, not yet completed.
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

/// Anonymous, page-aligned memory for the UMEM, unmapped on drop.
struct UmemArea {
    base: NonNull<u8>,
    len: usize,
}

impl UmemArea {
    fn new(len: usize) -> Result<Self, XskError> {
        // SAFETY: an anonymous private mapping with no address hint aliases nothing; the result is
        // checked for MAP_FAILED before use.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(XskError::Mmap {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        let base =
            NonNull::new(pointer.cast::<u8>()).ok_or(XskError::Config("mmap returned null"))?;
        Ok(UmemArea { base, len })
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, and the socket that shared
        // it with the kernel (dropped before this field) no longer uses it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One AF_XDP socket bound to one interface queue, with its own UMEM.
pub struct Xsk {
    // Field order is drop order: rings and sockets go before the UMEM registration, and the
    // memory itself goes last.
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: User,
    _umem: Umem,
    area: UmemArea,
    free: Vec<u64>,
    frame_mask: u64,
    frame_size: usize,
    frame_count: u32,
    in_fill: u32,
    in_tx: u32,
    in_hand: u32,
}

// SAFETY: the rings and UMEM are plain memory plus file descriptors; an `Xsk` is moved into its
// worker thread once and used only there.
#[allow(unsafe_code)]
unsafe impl Send for Xsk {}

impl Xsk {
    /// Creates a socket on `ifindex`/`queue` and binds it (the kernel picks zero-copy or copy
    /// mode). Frames only arrive once the socket is registered in the classifier's XSKMAP.
    pub fn open(ifindex: u32, queue: u32, config: XskConfig) -> Result<Self, XskError> {
        if !config.frame_size.is_power_of_two() || !(2048..=65536).contains(&config.frame_size) {
            return Err(XskError::Config(
                "frame_size must be a power of two between 2048 and 65536",
            ));
        }
        if !config.ring_size.is_power_of_two() || config.frame_count < 2 * config.ring_size {
            return Err(XskError::Config(
                "ring_size must be a power of two and frame_count >= 2 x ring_size",
            ));
        }
        let setup = |step: &'static str| {
            move |errno: xdpilone::Errno| XskError::Setup {
                step,
                ifindex,
                queue,
                errno: errno.get_raw(),
            }
        };

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
        // field order of `Xsk`); nothing else reads or writes it.
        let umem = unsafe {
            Umem::new(
                umem_config,
                NonNull::slice_from_raw_parts(area.base, area_len),
            )
        }
        .map_err(setup("UMEM registration"))?;

        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(setup("interface lookup"))?;
        info.set_queue(queue);
        let socket = Socket::with_shared(&info, &umem).map_err(setup("socket"))?;
        let device = umem
            .fq_cq(&socket)
            .map_err(setup("fill/completion rings"))?;
        let ring = NonZeroU32::new(config.ring_size);
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: ring,
                    tx_size: ring,
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP,
                },
            )
            .map_err(setup("RX/TX rings"))?;
        let rx = user.map_rx().map_err(setup("mapping the RX ring"))?;
        let tx = user.map_tx().map_err(setup("mapping the TX ring"))?;
        umem.bind(&user).map_err(setup("bind"))?;

        let free = (0..u64::from(config.frame_count))
            .rev()
            .map(|frame| frame * u64::from(config.frame_size))
            .collect();
        let mut xsk = Xsk {
            rx,
            tx,
            device,
            user,
            _umem: umem,
            area,
            free,
            frame_mask: !(u64::from(config.frame_size) - 1),
            frame_size: config.frame_size as usize,
            frame_count: config.frame_count,
            in_fill: 0,
            in_tx: 0,
            in_hand: 0,
        };
        xsk.refill();
        Ok(xsk)
    }

    /// The socket's file descriptor, for the XSKMAP. Borrowed: do not close it.
    pub fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Lends free frames to the kernel on the fill ring. Returns how many were added.
    pub fn refill(&mut self) -> u32 {
        let wanted = self.free.len().min(u32::MAX as usize) as u32;
        if wanted == 0 {
            return 0;
        }
        let mut writer = self.device.fill(wanted);
        // `insert` zips the iterator with the free slots and would swallow one extra item, so it
        // gets exactly as many frames as there are slots.
        let start = self.free.len() - writer.capacity() as usize;
        let added = writer.insert(self.free.drain(start..));
        writer.commit();
        self.in_fill += added;
        added
    }

    /// Takes up to `descs.len()` received frames; they are ours until transmitted or recycled.
    pub fn receive(&mut self, descs: &mut [XdpDesc]) -> usize {
        let mut reader = self.rx.receive(descs.len() as u32);
        let mut count = 0;
        while count < descs.len() {
            let Some(desc) = reader.read() else { break };
            descs[count] = desc;
            count += 1;
        }
        reader.release();
        drop(reader);
        self.in_fill -= count as u32;
        self.in_hand += count as u32;
        // As xdpsock does: poll only when nothing arrived and the driver asked for a wake-up
        // (zero-copy drivers set the flag when their fill ring ran dry; copy mode never does).
        if count == 0 && self.device.needs_wakeup() {
            self.device.wake();
        }
        count
    }

    /// The whole UMEM chunk a received frame lies in, and where the frame starts in it. The
    /// bytes before the frame are headroom (at least `XDP_PACKET_HEADROOM`, 256) that a rewrite
    /// may grow into; `None` if the descriptor points outside the UMEM.
    pub fn chunk_mut(&mut self, desc: &XdpDesc) -> Option<(&mut [u8], usize)> {
        let base = usize::try_from(desc.addr & self.frame_mask).ok()?;
        let start = usize::try_from(desc.addr).ok()? - base;
        let end = base.checked_add(self.frame_size)?;
        if end > self.area.len || start + desc.len as usize > self.frame_size {
            return None;
        }
        // SAFETY: [base, end) is one chunk inside the mapping; the frame in it was handed to us
        // by the RX ring, so the kernel no longer writes the chunk, and `&mut self` rules out a
        // second live view.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(self.area.base.as_ptr().add(base), self.frame_size)
        };
        Some((chunk, start))
    }

    /// The UMEM address of byte `start` of the chunk `desc` lies in, for a TX descriptor.
    pub fn chunk_address(&self, desc: &XdpDesc, start: usize) -> u64 {
        (desc.addr & self.frame_mask) + start as u64
    }

    /// Queues frames for transmission. Returns how many the TX ring took, a prefix of `descs`;
    /// the caller recycles the rest.
    pub fn transmit(&mut self, descs: &[XdpDesc]) -> usize {
        if descs.is_empty() {
            return 0;
        }
        // A reservation is served from a cached view of the kernel's consumer head and may come
        // back short while the ring has room; the second attempt refreshes that view.
        let mut sent = 0;
        for _ in 0..2 {
            let mut writer = self.tx.transmit((descs.len() - sent) as u32);
            sent += writer.insert(descs[sent..].iter().copied()) as usize;
            writer.commit();
            if sent == descs.len() {
                break;
            }
        }
        self.in_hand -= sent as u32;
        self.in_tx += sent as u32;
        sent
    }

    /// Returns a received frame to the free list (a dropped frame).
    pub fn recycle(&mut self, desc: &XdpDesc) {
        self.free.push(desc.addr & self.frame_mask);
        self.in_hand -= 1;
    }

    /// Moves frames the kernel finished transmitting back to the free list.
    pub fn reap_completions(&mut self) -> u32 {
        let mut reader = self.device.complete(self.in_tx);
        let mut reaped = 0;
        while let Some(address) = reader.read() {
            self.free.push(address & self.frame_mask);
            reaped += 1;
        }
        reader.release();
        self.in_tx -= reaped;
        reaped
    }

    /// Kicks the kernel to send what is on the TX ring, if it asked to be woken (need_wakeup).
    /// In copy mode the kernel always asks and one kick sends at most 32 frames, so the worker
    /// calls this every loop iteration while anything is pending, and never when nothing is.
    /// Returns whether a syscall was made.
    pub fn kick_tx(&mut self) -> bool {
        if self.tx.pending() == 0 || !self.tx.needs_wakeup() {
            return false;
        }
        self.tx.wake();
        true
    }

    /// Frames not yet seen on the completion ring.
    pub fn tx_in_flight(&self) -> u32 {
        self.in_tx
    }

    /// Where every frame is.
    pub fn accounting(&self) -> FrameAccounting {
        FrameAccounting {
            total: self.frame_count,
            free: self.free.len() as u32,
            in_fill: self.in_fill,
            in_tx: self.in_tx,
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

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> Option<KernelXskStats> {
        let stats = self.user.statistics_v2().ok()?;
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
