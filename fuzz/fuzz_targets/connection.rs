//! Fuzz target: echod's connections and event-loop code on operation
//! sequences.
//!
//! The input is a string of decisions for the simulation in
//! `tests/sim/mod.rs`, the one `cargo test` runs from seeds: limits, the
//! peers (one to eight, or a flood), their bytes, how they arrive, how each
//! peer reads, when each connects, and which faults strike when. AFL++ steers those decisions towards new code paths; a
//! broken property panics, and AFL++ records the input as a crash.
//! Replay one with `ECHOD_SIM_BYTES=FILE cargo test --test simulation`.

#[path = "../../tests/sim/mod.rs"]
mod sim;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(failure) = sim::run(sim::Bytes::new(data), false) {
            panic!("{failure}");
        }
    });
}
