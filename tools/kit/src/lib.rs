//! What echod's tools share, written once: `echo-bench`, `echo-chaos`, the
//! end-to-end benchmark (`benches/e2e`) and the tests that run the echod
//! binary all watch a server process from the outside, make seeded random
//! choices, or read a command line.
//!
//! - [`process`]: a process's resident memory, open descriptors and CPU
//!   time from `/proc`, the clock tick they are counted in, and signals.
//! - [`rng`]: [`SplitMix64`], a seeded generator whose output is fixed by
//!   this code, so a seed replays the same choices.
//! - [`sockets`]: another process's TCP sockets from `/proc/PID/net/tcp`,
//!   a duplicate of one of its descriptors to read socket options, and a
//!   thread moved into a named network namespace.
//! - [`args`]: option values parsed into numbers, durations and strings,
//!   with one error type and one wording for every tool.
//!
//! Nothing here knows about echod itself, and the daemon does not depend on
//! this crate: it is a dependency of the tools and of echod's benches and
//! tests only. Linux only, as `/proc` is.

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod args;
pub mod process;
pub mod rng;
pub mod sockets;

pub use rng::SplitMix64;
