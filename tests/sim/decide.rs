//! Where the simulation's choices come from: a seeded generator for
//! `cargo test`, or a fuzzer's bytes.

/// Where the simulation's choices come from: a seeded generator, or the
/// bytes of a fuzzer's input. Choice 0 is always the plainest one (no fault,
/// the smallest size), so an exhausted or all-zero source plays a calm run.
pub trait Decide {
    /// A number in `0..n`; `n` is at least 1.
    fn pick(&mut self, n: u64) -> u64;

    /// True once a finite source has run out (choices are then all 0).
    fn exhausted(&self) -> bool {
        false
    }
}

/// The seeded generator the tools use too: its output is fixed by its code
/// (`tools/kit`), not by a crate version, so a seed recorded today replays
/// the same scenario for as long as that code is unchanged.
pub use echod_kit::SplitMix64;

impl Decide for SplitMix64 {
    fn pick(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: uniform enough, and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Choices read from a byte string, as a fuzzer supplies it: each choice
/// takes as many bytes as its range needs; past the end, every choice is 0.
#[derive(Debug, Clone)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Choices from `data`.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data }
    }
}

impl Decide for Bytes<'_> {
    fn pick(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        let width = match n - 1 {
            0..=0xFF => 1,
            0x100..=0xFFFF => 2,
            0x1_0000..=0xFFFF_FFFF => 4,
            _ => 8,
        };
        let taken = width.min(self.data.len());
        let value = self.data[..taken]
            .iter()
            .fold(0u64, |value, &byte| value << 8 | u64::from(byte));
        self.data = &self.data[taken..];
        value % n
    }

    fn exhausted(&self) -> bool {
        self.data.is_empty()
    }
}

/// True with probability `per_mille`/1000; false for choice 0.
pub fn chance(decide: &mut impl Decide, per_mille: u64) -> bool {
    per_mille > 0 && decide.pick(1000) >= 1000 - per_mille.min(1000)
}
