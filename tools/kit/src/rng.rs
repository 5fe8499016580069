//! A small seeded generator, so that a run's random choices repeat with its
//! seed. Statistical quality matters little to a load test or a
//! simulation; reproducibility does.

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state and three
/// lines of arithmetic. Its output is fixed by this code, not by a crate
/// version, so a seed recorded today replays the same choices for as long
/// as this file is unchanged.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    /// Advanced by the golden-ratio increment before each output; any value
    /// is a valid state (there is no bad seed).
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be above 0. It is the remainder of the
    /// next output, so its bias is negligible for any `n` far below 2^64.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0) has no value to return");
        self.next_u64() % n
    }

    /// A number in `[0, 1)`, from the top 53 bits of the next output (all
    /// the precision an `f64` has).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn output_matches_the_published_sequence() {
        // The reference outputs for seed 1234567, as given with the
        // algorithm's published C code and Java's SplittableRandom.
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn a_seed_replays_and_a_clone_continues_the_same_stream() {
        let mut a = SplitMix64::new(42);
        a.next_u64();
        let mut b = a.clone();
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for n in [1, 2, 3, 10, 1_000_003] {
            for _ in 0..1_000 {
                assert!(rng.below(n) < n);
            }
        }
        for _ in 0..10_000 {
            let x = rng.unit();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
