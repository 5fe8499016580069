//! The handover form's fields as bytes: little-endian integers, flags,
//! counts, length-prefixed byte strings and addresses, written one after
//! another and read back the same way. What the fields are, and in which
//! order, is `handover.rs`'s.
//!
//! A reader never trusts a length it reads: a count is refused if it is
//! more than the bytes left (every record takes at least one), and a field
//! cut short is an error naming it, so that a damaged form cannot make the
//! reader allocate or loop beyond the form's size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::HandoverError;

/// Writes fields one after another.
#[derive(Default)]
pub(super) struct Writer(Vec<u8>);

impl Writer {
    /// Bytes as they are, with no length before them.
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// The bytes written so far.
    pub(super) fn bytes_so_far(&self) -> &[u8] {
        &self.0
    }

    /// What was written.
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A list's length. No list echod hands over comes near `u32::MAX`.
    pub(super) fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// A byte string: its length, then its bytes. Leftovers are bounded
    /// by the limits far below `u32::MAX`.
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    /// An address: 4 or 6, the address's bytes, the port.
    pub(super) fn address(&mut self, address: SocketAddr) {
        match address.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.u16(address.port());
    }
}

/// Reads fields one after another, each named for the error that says
/// which was cut short or out of range.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads `bytes` from their start.
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(bytes)
    }

    /// Whether every byte has been read.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn take(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], HandoverError> {
        if self.0.len() < n {
            return Err(HandoverError::Truncated(field));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], HandoverError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, HandoverError> {
        Ok(self.take(1, field)?[0])
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, HandoverError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, HandoverError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A flag: one byte, 0 or 1.
    pub(super) fn flag(&mut self, field: &'static str) -> Result<bool, HandoverError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(HandoverError::Invalid(field)),
        }
    }

    /// A descriptor number: never negative.
    pub(super) fn fd(&mut self, field: &'static str) -> Result<i32, HandoverError> {
        let fd = i32::from_le_bytes(self.array(field)?);
        if fd < 0 {
            return Err(HandoverError::Invalid(field));
        }
        Ok(fd)
    }

    /// A list's length, which cannot be more than the bytes left (every
    /// record takes at least one), so that a damaged count cannot make the
    /// reader allocate or loop beyond the form's size.
    pub(super) fn count(&mut self, field: &'static str) -> Result<usize, HandoverError> {
        let n = self.u32(field)? as usize;
        if n > self.0.len() {
            return Err(HandoverError::Truncated(field));
        }
        Ok(n)
    }

    pub(super) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], HandoverError> {
        let n = self.u32(field)? as usize;
        self.take(n, field)
    }

    pub(super) fn address(&mut self, field: &'static str) -> Result<SocketAddr, HandoverError> {
        let ip = match self.u8(field)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?)),
            _ => return Err(HandoverError::Invalid(field)),
        };
        let port = u16::from_le_bytes(self.array(field)?);
        Ok(SocketAddr::new(ip, port))
    }
}
