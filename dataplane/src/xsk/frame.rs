//! Handles for received UMEM frames, so that the type system keeps the accounting.
//!
//! A frame taken from an RX ring comes out as an [`RxFrame`]: not `Copy`, not `Clone`, and made
//! only by [`super::Xsk::receive`]. Giving the chunk back takes the handle by value
//! ([`super::Xsk::transmit`] or [`super::Xsk::recycle`]), so a frame cannot be recycled twice,
//! transmitted and recycled, or handed on after it went back to the kernel: each is a move of a
//! moved value, a compile error. A dropped handle leaks its chunk (it stays counted as in hand),
//! which is a bug the frame accounting shows, never unsound.
//!
//! [`Frames`] is the fixed-capacity batch the hot loop keeps them in (no allocation per packet).
//!
//! This module holds no memory and must not touch it: the bytes are reached through the
//! [`super::Xsk`] that received the frame.

#![deny(unsafe_code)]

use xdpilone::xdp::XdpDesc;

/// A received frame, ours until [`super::Xsk::transmit`] or [`super::Xsk::recycle`] consumes it.
///
/// Its bytes are reached through the [`super::Xsk`] that received it
/// ([`super::Xsk::chunk_mut`], [`super::Xsk::frame`]); after a rewrite moved the frame within
/// its chunk, [`super::Xsk::reframe`] records where it now lies, for transmission.
///
/// Giving a chunk back twice does not compile:
///
/// ```compile_fail
/// fn twice(xsk: &mut dataplane::xsk::Xsk, frame: dataplane::xsk::RxFrame) {
///     xsk.recycle(frame);
///     xsk.recycle(frame); // use of moved value
/// }
/// ```
#[derive(Debug)]
#[must_use = "a received frame must be transmitted or recycled, or its UMEM chunk is lost"]
pub struct RxFrame {
    pub(super) desc: XdpDesc,
    /// The [`super::Xsk`] whose UMEM the frame is in (its `id`): a frame of another socket is
    /// refused rather than read, sent or freed.
    pub(super) owner: u32,
}

impl RxFrame {
    /// What fills the unused slots of a [`Frames`]: never handed out, and owned by no socket.
    const VACANT: RxFrame = RxFrame {
        desc: XdpDesc {
            addr: 0,
            len: 0,
            options: 0,
        },
        owner: 0,
    };

    /// Bytes in the frame.
    pub fn len(&self) -> usize {
        self.desc.len as usize
    }

    /// True for a frame of no bytes.
    pub fn is_empty(&self) -> bool {
        self.desc.len == 0
    }
}

/// Up to `N` received frames, kept in order in a fixed array: an RX burst, or a port's TX list.
#[derive(Debug)]
pub struct Frames<const N: usize> {
    /// `slots[..len]` are frames we own; the rest are [`RxFrame::VACANT`].
    slots: [RxFrame; N],
    len: usize,
}

impl<const N: usize> Default for Frames<N> {
    fn default() -> Self {
        Frames::new()
    }
}

impl<const N: usize> Frames<N> {
    /// An empty batch.
    pub const fn new() -> Self {
        Frames {
            slots: [RxFrame::VACANT; N],
            len: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no frame is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frames that can still be added.
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// Adds a frame at the end, or gives it back when the batch is full.
    #[inline]
    pub fn push(&mut self, frame: RxFrame) -> Result<(), RxFrame> {
        match self.slots.get_mut(self.len) {
            Some(slot) => {
                *slot = frame;
                self.len += 1;
                Ok(())
            }
            None => Err(frame),
        }
    }

    /// The frames held, in order, to look at.
    pub fn iter(&self) -> std::slice::Iter<'_, RxFrame> {
        self.slots[..self.len].iter()
    }

    /// Takes the frames out in order, each by value; those not taken when the drain is dropped
    /// stay in the batch.
    pub fn drain(&mut self) -> Drain<'_, N> {
        Drain {
            frames: self,
            next: 0,
        }
    }

    /// The descriptors of the frames held, for a TX ring.
    pub(super) fn descs(&self) -> impl Iterator<Item = XdpDesc> + '_ {
        self.iter().map(|frame| frame.desc)
    }

    /// Forgets the first `count` frames (the kernel has them now) and moves the rest to the
    /// front.
    pub(super) fn remove_front(&mut self, count: usize) {
        let count = count.min(self.len);
        for slot in &mut self.slots[..count] {
            *slot = RxFrame::VACANT;
        }
        self.slots[..self.len].rotate_left(count);
        self.len -= count;
    }

    /// Adds a descriptor an RX ring handed over; the caller has checked there is room.
    pub(super) fn push_received(&mut self, desc: XdpDesc, owner: u32) {
        self.slots[self.len] = RxFrame { desc, owner };
        self.len += 1;
    }
}

impl<'a, const N: usize> IntoIterator for &'a Frames<N> {
    type Item = &'a RxFrame;
    type IntoIter = std::slice::Iter<'a, RxFrame>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Takes a [`Frames`]' frames out in order ([`Frames::drain`]), and lets the loop look at the
/// ones still to come (to prefetch them).
#[derive(Debug)]
pub struct Drain<'a, const N: usize> {
    frames: &'a mut Frames<N>,
    /// The slot `next` hands out.
    next: usize,
}

impl<const N: usize> Drain<'_, N> {
    /// The frame `distance` places after the one [`Iterator::next`] returned last: 1 is the next
    /// one to come.
    pub fn ahead(&self, distance: usize) -> Option<&RxFrame> {
        let index = (self.next + distance).checked_sub(1)?;
        self.frames.slots[..self.frames.len].get(index)
    }

    /// The frames not yet taken.
    pub fn remaining(&self) -> &[RxFrame] {
        &self.frames.slots[self.next..self.frames.len]
    }
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = RxFrame;

    #[inline]
    fn next(&mut self) -> Option<RxFrame> {
        if self.next >= self.frames.len {
            return None;
        }
        let frame = std::mem::replace(&mut self.frames.slots[self.next], RxFrame::VACANT);
        self.next += 1;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.frames.len - self.next;
        (left, Some(left))
    }
}

impl<const N: usize> Drop for Drain<'_, N> {
    fn drop(&mut self) {
        // The taken slots are vacant now: keep the rest, at the front.
        let frames = &mut *self.frames;
        if self.next < frames.len {
            frames.slots[..frames.len].rotate_left(self.next);
        }
        frames.len -= self.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(addr: u64) -> RxFrame {
        RxFrame {
            desc: XdpDesc {
                addr,
                len: 60,
                options: 0,
            },
            owner: 1,
        }
    }

    fn addresses<const N: usize>(frames: &Frames<N>) -> Vec<u64> {
        frames.iter().map(|frame| frame.desc.addr).collect()
    }

    #[test]
    fn a_full_batch_gives_the_frame_back() {
        let mut frames = Frames::<2>::new();
        assert!(frames.push(frame(0)).is_ok());
        assert!(frames.push(frame(4096)).is_ok());
        let refused = frames.push(frame(8192)).unwrap_err();
        assert_eq!(refused.desc.addr, 8192);
        assert_eq!((frames.len(), frames.room()), (2, 0));
    }

    #[test]
    fn a_drain_looks_ahead_and_keeps_what_it_did_not_take() {
        let mut frames = Frames::<4>::new();
        for addr in [0, 4096, 8192] {
            frames.push(frame(addr)).unwrap();
        }
        let mut drain = frames.drain();
        assert_eq!(drain.ahead(1).map(|frame| frame.desc.addr), Some(0));
        assert_eq!(drain.next().map(|frame| frame.desc.addr), Some(0));
        assert_eq!(drain.ahead(2).map(|frame| frame.desc.addr), Some(8192));
        assert!(drain.ahead(3).is_none());
        drop(drain);
        assert_eq!(addresses(&frames), [4096, 8192]);
        assert_eq!(frames.drain().count(), 2);
        assert!(frames.is_empty());
    }

    #[test]
    fn removing_the_sent_prefix_keeps_the_rest_in_order() {
        let mut frames = Frames::<4>::new();
        for addr in [0, 4096, 8192, 12288] {
            frames.push(frame(addr)).unwrap();
        }
        frames.remove_front(3);
        assert_eq!(addresses(&frames), [12288]);
        frames.remove_front(5);
        assert!(frames.is_empty());
    }
}
