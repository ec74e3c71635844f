//! The netlink message format: building a request (`nlmsghdr`, a fixed header, 4-byte aligned
//! attributes) and walking the messages and attributes of a reply with bounds-checked
//! `from_ne_bytes` reads, never pointer casts.
//!
//! Pure bytes: no socket, no unsafe. What it must not do: panic on any reply bytes.

// Constants from <linux/netlink.h>, typed as the wire uses them rather than taken from libc,
// whose integer types vary between targets.
pub(super) const NLMSG_HEADER_LEN: usize = 16;
pub(super) const NLMSG_NOOP: u16 = 1;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLMSG_OVERRUN: u16 = 4;
pub(super) const NLM_F_REQUEST: u16 = 0x01;
pub(super) const NLM_F_MULTI: u16 = 0x02;
pub(super) const NLM_F_ACK: u16 = 0x04;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_REPLACE: u16 = 0x100;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A request being built: `nlmsghdr`, a fixed header, then attributes, each 4-byte aligned.
pub(super) struct Message {
    bytes: Vec<u8>,
}

impl Message {
    pub(super) fn new(kind: u16, flags: u16) -> Self {
        let mut bytes = vec![0u8; NLMSG_HEADER_LEN];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        Message { bytes }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    pub(super) fn attribute(&mut self, kind: u16, data: &[u8]) {
        let length = (4 + data.len()) as u16;
        self.bytes.extend_from_slice(&length.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.push(data);
    }

    pub(super) fn finish(&mut self, sequence: u32) -> &[u8] {
        let length = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&sequence.to_ne_bytes());
        &self.bytes
    }
}

/// The parts of a `nlmsghdr` we look at.
pub(super) struct Header {
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) sequence: u32,
}

/// The netlink messages in one datagram; yields an error (then stops) on a bad header.
pub(super) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Messages { rest: bytes }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let length = read_u32(self.rest, 0).ok_or("short message header")? as usize;
            if length < NLMSG_HEADER_LEN || length > self.rest.len() {
                return Err("message length out of bounds");
            }
            let header = Header {
                kind: read_u16(self.rest, 4).ok_or("short message header")?,
                flags: read_u16(self.rest, 6).ok_or("short message header")?,
                sequence: read_u32(self.rest, 8).ok_or("short message header")?,
            };
            Ok((header, length))
        })();
        match parsed {
            Ok((header, length)) => {
                let payload = &self.rest[NLMSG_HEADER_LEN..length];
                self.rest = &self.rest[align4(length).min(self.rest.len())..];
                Some(Ok((header, payload)))
            }
            Err(detail) => {
                self.rest = &[];
                Some(Err(detail))
            }
        }
    }
}

/// `(type, data)` of each route attribute; stops at the first malformed one.
pub(crate) struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Attributes { rest: bytes }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let length = read_u16(self.rest, 0)? as usize;
        let kind = read_u16(self.rest, 2)? & NLA_TYPE_MASK;
        if length < 4 || length > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &self.rest[4..length];
        self.rest = &self.rest[align4(length).min(self.rest.len())..];
        Some((kind, data))
    }
}

const fn align4(length: usize) -> usize {
    (length + 3) & !3
}

pub(crate) fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

pub(super) fn read_i32(bytes: &[u8], offset: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}
