//! The state one echod hands the next across an upgrade: every listening
//! socket, every live connection with its leftovers byte for byte, the
//! totals behind the summary and the metrics, and the next connection id.
//!
//! This module is only the form that state travels in, and its checks; it
//! does no I/O and knows nothing of descriptors beyond their numbers. The
//! form is versioned and checked, so that a program that does not
//! understand it says so instead of misreading it:
//!
//! ```text
//! magic "echod-up" | version u32 | body length u64 | body | CRC-32 u32
//! ```
//!
//! Every integer is little-endian; the CRC-32 (IEEE, as zlib's) covers
//! everything before it. The body is the next connection id, the named
//! counters, the listeners, the metrics endpoint's listeners, then the
//! connections; each list is a count
//! followed by its records, each byte string a length followed by its
//! bytes. Counters travel by name, so that a program with a counter the
//! other lacks starts that one at zero instead of refusing the rest.
//!
//! `decode` accepts exactly what `encode` writes: a form of another version,
//! cut short, with trailing bytes, with a field out of its range or a
//! checksum that does not match is an error that names what was wrong, and
//! nothing is allocated beyond the bytes the form itself holds.

use std::fmt;
use std::net::SocketAddr;

mod wire;

use crate::state::{Finish, State};
use crate::summary::counted;
use wire::{Reader, Writer};

/// The version of the form this program writes and the only one it reads.
/// `echod --version` prints it, so that an upgrade can check the new
/// program understands the form before handing anything over.
pub const FORMAT_VERSION: u32 = 1;

/// The first bytes of every form.
const MAGIC: &[u8; 8] = b"echod-up";

/// Bytes before the body: the magic, the version and the body's length.
const HEADER_BYTES: usize = 8 + 4 + 8;

/// Everything handed over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handover {
    /// The id the next accepted connection gets, so that ids stay unique.
    pub next_connection_id: u64,
    /// The totals, by the names the summary and the metrics know them by.
    pub counters: Vec<(String, u64)>,
    /// The listening sockets, each the same open socket.
    pub listeners: Vec<ListenerRecord>,
    /// The metrics endpoint's listening sockets (`--metrics-listen`), also
    /// carried over rather than bound again.
    pub metrics_listeners: Vec<ListenerRecord>,
    /// The live connections.
    pub connections: Vec<ConnectionRecord>,
}

impl Handover {
    /// What it carries, as the log says it: `2 listening sockets and 812
    /// connections`.
    pub fn contents(&self) -> String {
        format!(
            "{} and {}",
            counted(
                self.listeners.len() + self.metrics_listeners.len(),
                "listening socket"
            ),
            counted(self.connections.len(), "connection")
        )
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRecord {
    /// Its descriptor, kept open across the `execve`.
    pub fd: i32,
    /// The address it is bound to, for the log.
    pub address: SocketAddr,
}

/// One live connection: enough to carry on exactly where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Its socket's descriptor, kept open across the `execve`.
    pub fd: i32,
    /// Its connection id.
    pub id: u64,
    /// Its state.
    pub state: State,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Complete lines received so far.
    pub lines: u64,
    /// Whether the peer has sent anything.
    pub received_any: bool,
    /// Whether it still waits for its PROXY protocol header
    /// (`--proxy-protocol`): nothing of it has been consumed yet.
    pub awaiting_header: bool,
    /// Bytes echoed so far.
    pub bytes_echoed: u64,
    /// How long ago bytes last moved either way (or, lingering, the FIN
    /// went), in milliseconds. Ages rather than times, since each program
    /// has a clock of its own.
    pub active_age_ms: u64,
    /// How long its owed echoes have waited without progress.
    pub owing_age_ms: u64,
    /// How long its unfinished line has been arriving.
    pub line_age_ms: u64,
    /// The echoes owed, byte for byte.
    pub pending: Vec<u8>,
    /// The unfinished line, byte for byte.
    pub unfinished: Vec<u8>,
}

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverError {
    /// It does not begin with the magic: not a handover at all.
    NotAHandover,
    /// It is of a version this program does not read.
    Version(u32),
    /// It ends before the field named.
    Truncated(&'static str),
    /// Bytes follow the checksum.
    TrailingBytes(usize),
    /// The checksum does not match: the form was damaged.
    Checksum {
        /// What the form says.
        stored: u32,
        /// What its bytes give.
        computed: u32,
    },
    /// A field holds a value it cannot have.
    Invalid(&'static str),
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoverError::NotAHandover => write!(f, "not an echod handover (no magic)"),
            HandoverError::Version(version) => write!(
                f,
                "handover format {version}, and this program reads format {FORMAT_VERSION}"
            ),
            HandoverError::Truncated(field) => write!(f, "handover cut short at {field}"),
            HandoverError::TrailingBytes(n) => {
                write!(f, "{n} bytes after the handover's checksum")
            }
            HandoverError::Checksum { stored, computed } => write!(
                f,
                "handover damaged: checksum {stored:#010x}, its bytes give {computed:#010x}"
            ),
            HandoverError::Invalid(field) => write!(f, "handover has an invalid {field}"),
        }
    }
}

impl std::error::Error for HandoverError {}

/// Writes `handover` in the form `decode` reads.
pub fn encode(handover: &Handover) -> Vec<u8> {
    let mut body = Writer::default();
    body.u64(handover.next_connection_id);
    body.count(handover.counters.len());
    for (name, value) in &handover.counters {
        body.bytes(name.as_bytes());
        body.u64(*value);
    }
    for listeners in [&handover.listeners, &handover.metrics_listeners] {
        body.count(listeners.len());
        for listener in listeners {
            body.i32(listener.fd);
            body.address(listener.address);
        }
    }
    body.count(handover.connections.len());
    for connection in &handover.connections {
        body.i32(connection.fd);
        body.u64(connection.id);
        let (state, finish) = state_code(connection.state);
        body.u8(state);
        body.u8(finish);
        body.address(connection.peer);
        body.u64(connection.lines);
        body.u8(u8::from(connection.received_any));
        body.u8(u8::from(connection.awaiting_header));
        body.u64(connection.bytes_echoed);
        body.u64(connection.active_age_ms);
        body.u64(connection.owing_age_ms);
        body.u64(connection.line_age_ms);
        body.bytes(&connection.pending);
        body.bytes(&connection.unfinished);
    }
    frame(&body)
}

/// The form around a body: the magic, the version, the body's length, the
/// body, and the CRC-32 of all of them.
fn frame(body: &Writer) -> Vec<u8> {
    let body = body.bytes_so_far();
    let mut form = Writer::default();
    form.raw(MAGIC);
    form.u32(FORMAT_VERSION);
    form.u64(body.len() as u64);
    form.raw(body);
    let checksum = crc32fast::hash(form.bytes_so_far());
    form.u32(checksum);
    form.into_bytes()
}

/// Reads a form `encode` wrote (see the module docs for what it refuses).
///
/// # Errors
///
/// The form is not a handover, is of another version, is damaged or cut
/// short, or holds a value out of range.
pub fn decode(form: &[u8]) -> Result<Handover, HandoverError> {
    if form.len() < MAGIC.len() || &form[..MAGIC.len()] != MAGIC {
        return Err(HandoverError::NotAHandover);
    }
    let mut header = Reader::new(&form[MAGIC.len()..]);
    let version = header.u32("version")?;
    if version != FORMAT_VERSION {
        return Err(HandoverError::Version(version));
    }
    let body_len = header.u64("body length")?;
    let body_len = usize::try_from(body_len).map_err(|_| HandoverError::Truncated("body"))?;
    let checked_len = HEADER_BYTES
        .checked_add(body_len)
        .ok_or(HandoverError::Truncated("body"))?;
    if form.len() < checked_len + 4 {
        return Err(HandoverError::Truncated(if form.len() < checked_len {
            "body"
        } else {
            "checksum"
        }));
    }
    if form.len() > checked_len + 4 {
        return Err(HandoverError::TrailingBytes(form.len() - checked_len - 4));
    }
    let (checked, stored) = form.split_at(checked_len);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32fast::hash(checked);
    if stored != computed {
        return Err(HandoverError::Checksum { stored, computed });
    }

    let mut body = Reader::new(&checked[HEADER_BYTES..]);
    let next_connection_id = body.u64("next connection id")?;
    let mut counters = Vec::new();
    for _ in 0..body.count("counters")? {
        let name = String::from_utf8(body.bytes("counter name")?.to_vec())
            .map_err(|_| HandoverError::Invalid("counter name"))?;
        counters.push((name, body.u64("counter value")?));
    }
    let listeners = read_listeners(&mut body, "listeners")?;
    let metrics_listeners = read_listeners(&mut body, "metrics listeners")?;
    let mut connections = Vec::new();
    for _ in 0..body.count("connections")? {
        let fd = body.fd("connection descriptor")?;
        let id = body.u64("connection id")?;
        let state = state_of(body.u8("state")?, body.u8("finish")?)?;
        connections.push(ConnectionRecord {
            fd,
            id,
            state,
            peer: body.address("peer address")?,
            lines: body.u64("lines")?,
            received_any: body.flag("received flag")?,
            awaiting_header: body.flag("header flag")?,
            bytes_echoed: body.u64("bytes echoed")?,
            active_age_ms: body.u64("activity age")?,
            owing_age_ms: body.u64("owing age")?,
            line_age_ms: body.u64("line age")?,
            pending: body.bytes("pending output")?.to_vec(),
            unfinished: body.bytes("unfinished line")?.to_vec(),
        });
    }
    if !body.is_empty() {
        return Err(HandoverError::Invalid("body length"));
    }
    Ok(Handover {
        next_connection_id,
        counters,
        listeners,
        metrics_listeners,
        connections,
    })
}

/// A state as two bytes: which state, and which finish for the two that
/// have one (0 for the others).
fn state_code(state: State) -> (u8, u8) {
    let finish = |finish: Finish| match finish {
        Finish::PeerFinished => 1,
        Finish::LineTooLong => 2,
        Finish::ServerShutdown => 3,
    };
    match state {
        // A wait for a PROXY header travels as an open connection with the
        // record's `awaiting_header` flag (`Connection::hand_over`).
        State::AwaitingHeader | State::Open => (0, 0),
        State::Paused => (1, 0),
        State::Draining(f) => (2, finish(f)),
        State::Lingering(f) => (3, finish(f)),
    }
}

fn state_of(state: u8, finish_code: u8) -> Result<State, HandoverError> {
    let finish = || match finish_code {
        1 => Ok(Finish::PeerFinished),
        2 => Ok(Finish::LineTooLong),
        3 => Ok(Finish::ServerShutdown),
        _ => Err(HandoverError::Invalid("finish")),
    };
    match (state, finish_code) {
        (0, 0) => Ok(State::Open),
        (1, 0) => Ok(State::Paused),
        (2, _) => Ok(State::Draining(finish()?)),
        (3, _) => Ok(State::Lingering(finish()?)),
        _ => Err(HandoverError::Invalid("state")),
    }
}

/// A count of listening sockets, then each one's descriptor and address.
fn read_listeners(
    body: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<ListenerRecord>, HandoverError> {
    let mut listeners = Vec::new();
    for _ in 0..body.count(field)? {
        listeners.push(ListenerRecord {
            fd: body.fd("listener descriptor")?,
            address: body.address("listener address")?,
        });
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn state() -> impl Strategy<Value = State> {
        let finish = prop_oneof![
            Just(Finish::PeerFinished),
            Just(Finish::LineTooLong),
            Just(Finish::ServerShutdown),
        ];
        prop_oneof![
            Just(State::Open),
            Just(State::Paused),
            finish.clone().prop_map(State::Draining),
            finish.prop_map(State::Lingering),
        ]
    }

    fn address() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| (Ipv4Addr::from(ip), port).into()),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| (Ipv6Addr::from(ip), port).into()),
        ]
    }

    fn connection() -> impl Strategy<Value = ConnectionRecord> {
        (
            (
                0..i32::MAX,
                any::<u64>(),
                state(),
                address(),
                any::<u64>(),
                any::<bool>(),
                any::<bool>(),
            ),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
        )
            .prop_map(
                |(
                    (fd, id, state, peer, lines, received_any, awaiting_header),
                    (bytes_echoed, active_age_ms, owing_age_ms, line_age_ms),
                    (pending, unfinished),
                )| ConnectionRecord {
                    fd,
                    id,
                    state,
                    peer,
                    lines,
                    received_any,
                    awaiting_header,
                    bytes_echoed,
                    active_age_ms,
                    owing_age_ms,
                    line_age_ms,
                    pending,
                    unfinished,
                },
            )
    }

    fn handover() -> impl Strategy<Value = Handover> {
        (
            any::<u64>(),
            proptest::collection::vec(("[a-z_]{0,20}", any::<u64>()), 0..8),
            listeners(),
            listeners(),
            proptest::collection::vec(connection(), 0..12),
        )
            .prop_map(
                |(next_connection_id, counters, listeners, metrics_listeners, connections)| {
                    Handover {
                        next_connection_id,
                        counters,
                        listeners,
                        metrics_listeners,
                        connections,
                    }
                },
            )
    }

    fn listeners() -> impl Strategy<Value = Vec<ListenerRecord>> {
        proptest::collection::vec(
            (0..i32::MAX, address()).prop_map(|(fd, address)| ListenerRecord { fd, address }),
            0..4,
        )
    }

    proptest! {
        /// Every state, leftovers of every shape, any ages and counters:
        /// what is read is what was written.
        #[test]
        fn a_handover_reads_back_as_it_was_written(handover in handover()) {
            prop_assert_eq!(decode(&encode(&handover)), Ok(handover));
        }

        /// Any one byte changed anywhere is refused, never misread.
        #[test]
        fn a_damaged_form_is_refused(handover in handover(), at in any::<prop::sample::Index>(), flip in 1..=255u8) {
            let mut form = encode(&handover);
            let at = at.index(form.len());
            form[at] ^= flip;
            prop_assert!(decode(&form).is_err());
        }

        /// Cut anywhere, or with anything after it, it is refused.
        #[test]
        fn a_form_cut_short_or_followed_by_bytes_is_refused(handover in handover(), at in any::<prop::sample::Index>(), extra in 1..16usize) {
            let form = encode(&handover);
            let cut = at.index(form.len());
            prop_assert!(decode(&form[..cut]).is_err());
            let mut longer = form.clone();
            longer.extend(std::iter::repeat_n(0, extra));
            prop_assert_eq!(decode(&longer), Err(HandoverError::TrailingBytes(extra)));
        }
    }

    #[test]
    fn a_form_of_another_version_is_refused_by_name() {
        let mut form = encode(&Handover::default());
        form[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode(&form).expect_err("another version");
        assert_eq!(err, HandoverError::Version(FORMAT_VERSION + 1));
        assert!(
            err.to_string().contains("this program reads format 1"),
            "{err}"
        );
    }

    #[test]
    fn anything_else_is_not_a_handover() {
        assert_eq!(decode(b""), Err(HandoverError::NotAHandover));
        assert_eq!(
            decode(b"GET / HTTP/1.1\r\n"),
            Err(HandoverError::NotAHandover)
        );
    }

    #[test]
    fn a_count_larger_than_the_form_is_refused_without_allocating_for_it() {
        // A well-formed form whose counter count says four billion.
        let mut body = Writer::default();
        body.u64(1);
        body.u32(u32::MAX);
        assert_eq!(
            decode(&frame(&body)),
            Err(HandoverError::Truncated("counters"))
        );
    }

    /// The fuzzer's seeds are forms this program reads, so that it starts
    /// from inputs that reach every field.
    #[test]
    fn the_fuzzers_seeds_are_read() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/handover");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).expect("the seeds folder") {
            let form = std::fs::read(entry.expect("a seed").path()).expect("a seed's bytes");
            let handover = decode(&form).expect("a seed decodes");
            assert_eq!(encode(&handover), form);
            seeds += 1;
        }
        assert!(seeds >= 2);
    }
}
