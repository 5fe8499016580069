//! echod's event-loop code under deterministic simulation.
//!
//! `sim` (tests/sim/mod.rs) runs echod's own `Connections` inside the
//! server's own turn (`echod::server::turn`: the accept loop, `drive` and
//! `apply`, the serve-again list, the memory relief, the shutdown, the
//! expiry sweep and the shutdown deadline, in the order `Server::run`
//! takes them) on a simulated kernel, listener and registrar, with one to eight
//! peers per scenario (and now and then a flood of probes), injecting
//! faults, and checks every connection's promises and the loop's fairness
//! at every step; its module docs list the properties. This file runs it:
//!
//! - from seeds: `DEFAULT_SEEDS` of them in `cargo test`, or
//!   `ECHOD_SIM_SEEDS=N` for a longer run (see README.md, *Testing*). A
//!   failing seed prints itself; `ECHOD_SIM_SEED=S` replays that one seed
//!   with a trace of every step on standard error;
//! - from byte strings, through proptest, the way the fuzz target under
//!   `fuzz/` runs it: a failure there is shrunk to a short string;
//! - on fixed scripts, for cases found before.
//!
//! The seeded run ends by checking that the seeds reached every path it
//! claims to test: every close reason, pauses and resumes, serving again,
//! several connections at once, the accept budget spent, rejections at
//! `max_connections`, and each injected fault.

mod sim;

use std::panic::{self, AssertUnwindSafe};

use echod::Framing;
use echod::connection::Limits;
use proptest::prelude::*;

use sim::{Bytes, Coverage, Decide, Faults, LoopFaults, Peer, Scenario, SplitMix64, World};

/// Seeds `cargo test` runs: about 8 seconds in a debug build (a scenario
/// has one to eight connections, so a seed costs several of the
/// one-connection seeds this file once ran 3,000 of).
const DEFAULT_SEEDS: u64 = 1000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The contents of the file named by the environment variable `name`.
fn env_file(name: &str) -> Option<Vec<u8>> {
    let path = std::env::var_os(name)?;
    Some(std::fs::read(&path).unwrap_or_else(|err| panic!("{name}={path:?}: {err}")))
}

#[test]
fn seeded_scenarios_keep_every_property() {
    // A crash found by the `connection` fuzz target, replayed with a trace.
    if let Some(decisions) = env_file("ECHOD_SIM_BYTES") {
        if let Err(failure) = sim::run(Bytes::new(&decisions), true) {
            panic!("fuzz input failed: {failure}");
        }
        return;
    }
    if let Some(seed) = env_u64("ECHOD_SIM_SEED") {
        if let Err(failure) = sim::run(SplitMix64::new(seed), true) {
            panic!("simulation seed {seed} failed: {failure}");
        }
        return;
    }
    let first = env_u64("ECHOD_SIM_FIRST_SEED").unwrap_or(0);
    let seeds = env_u64("ECHOD_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let mut coverage = Coverage::default();
    for seed in first..first + seeds {
        let replay = format!("replay: ECHOD_SIM_SEED={seed} cargo test --test simulation");
        match panic::catch_unwind(AssertUnwindSafe(|| sim::run(SplitMix64::new(seed), false))) {
            Ok(Ok(run)) => coverage.add(&run),
            Ok(Err(failure)) => panic!("simulation seed {seed} failed: {failure}\n  {replay}"),
            Err(_) => panic!("simulation seed {seed} panicked (message above)\n  {replay}"),
        }
    }
    eprintln!("{seeds} seeds from {first}: {coverage:#?}");
    // A generator that stopped reaching a path would let this test pass
    // without testing it. `rejected`, `unregistered` and `refused` are how
    // a connection that never got in ended: at `max_connections`, when its
    // registration failed, and when the listener closed at shutdown.
    for reason in [
        "peer finished",
        "line too long",
        "server shutdown",
        "idle timeout",
        "send timeout",
        "line timeout",
        "evicted for memory",
        "too many from one address",
        "shutdown timeout",
        "socket error",
        "rejected",
        "unregistered",
        "refused",
    ] {
        assert!(
            coverage.closes.contains_key(reason),
            "no run closed with {reason}: {coverage:#?}"
        );
    }
    assert!(
        coverage.paused > 0
            && coverage.resumed > 0
            && coverage.served_again > 0
            && coverage.lingered > 0
            && coverage.interrupts > 0
            && coverage.spurious_events > 0
            && coverage.cut_reads > 0
            && coverage.cut_writes > 0
            && coverage.several_connections > 0
            && coverage.most_open >= 8
            && coverage.accept_budget_spent > 0
            && coverage.left_to_next_turn > 0
            && coverage.rejected > 0
            && coverage.displaced > 0
            && coverage.closed_idle_at_shutdown > 0
            && coverage.accept_errors > 0
            && coverage.register_errors > 0
            && coverage.stale_events > 0
            && coverage.starved > 0
            && coverage.over_budget > 0
            && coverage.keepalive_timeouts > 0,
        "a path was never taken: {coverage:#?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The fuzz target's harness: choices read from bytes.
    #[test]
    fn decision_strings_keep_every_property(decisions in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(failure) = sim::run(Bytes::new(&decisions), false) {
            prop_assert!(false, "{}", failure);
        }
    }
}

/// Line scanning, whole and in pieces, agrees with the reference model on
/// seeded inputs laid out as the `framing` fuzz target reads them.
#[test]
fn framing_agrees_with_the_reference_model() {
    if let Some(data) = env_file("ECHOD_FRAMING_BYTES") {
        sim::check_framing(&data).unwrap_or_else(|failure| panic!("fuzz input failed: {failure}"));
        return;
    }
    for seed in 0..2000 {
        let mut random = SplitMix64::new(seed);
        let len = 4 + random.pick(400) as usize;
        let mut data: Vec<u8> = (0..len)
            .map(|_| [b'\r', b'\n', b'a', random.next_u64() as u8][random.pick(4) as usize])
            .collect();
        // Mostly small limits, so that lines reach them.
        data[1] = 0;
        data[2] = random.pick(if seed % 8 == 0 { 256 } else { 40 }) as u8;
        if let Err(failure) = sim::check_framing(&data) {
            panic!("framing seed {seed}: {failure}");
        }
    }
}

/// A case proptest found in the connection's first property test: LF
/// framing, one byte of pending output pauses reading, lines of CRs, input
/// arriving in small pieces before the loop first polls.
#[test]
fn lines_of_carriage_returns_with_a_one_byte_mark_are_echoed() {
    let mut input = Vec::new();
    for run in [9, 10, 10, 7, 5, 9, 8, 10, 8, 10, 7, 10, 8, 10, 5, 8, 10, 3] {
        input.extend(std::iter::repeat_n(b'\r', run));
        input.push(b'\n');
    }
    input.pop();
    let scenario = Scenario {
        limits: Limits::new(Framing::Lf, 11, 1),
        idle_ms: 0,
        send_ms: 0,
        line_ms: 0,
        memory_limit: usize::MAX,
        max_per_address: usize::MAX,
        addresses: 1,
        max_connections: usize::MAX,
        shutdown_timeout_ms: u64::MAX / 2,
        peers: vec![Peer {
            input: input.clone(),
            peer_fin: true,
            send_space: 0,
            arrive_max: 1,
            drain_max: 1,
            faults: Faults::default(),
        }],
        probes: 0,
        steps: 0,
        faults: LoopFaults::default(),
    };
    let mut world = World::new(scenario, Bytes::new(&[]), false);
    for n in [1, 1, 1, 1, 1, 22, 28, 37, 37, 35] {
        world.arrive(0, n);
    }
    world.settle().expect("the connection finishes");
    let expected = sim::reference(Framing::Lf, &input, 11);
    assert_eq!(world.close_reason(0), Some("peer finished"));
    assert_eq!(world.written(0), &input[..expected.echo_len]);
}
