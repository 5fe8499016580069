//! Fuzz target: `Framing::scan` on byte streams, cut into reads the way a
//! connection's buffer feeds it, against the reference model in
//! `tests/sim/mod.rs`.
//!
//! Input layout: byte 0 picks the framing, bytes 1-2 the line limit (plus 2,
//! big-endian), byte 3 seeds the read sizes, the rest is the stream.
//! Replay one with `ECHOD_FRAMING_BYTES=FILE cargo test --test simulation`.

#[path = "../../tests/sim/mod.rs"]
mod sim;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(failure) = sim::check_framing(data) {
            panic!("{failure}");
        }
    });
}
