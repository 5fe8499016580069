//! What the end-to-end benchmark runs: its parts (the workloads, the
//! counts, the idle memory), the command line that selects them and sets
//! their length, and the plan announced before anything starts (what will
//! run, and about how long it takes).
//!
//! This module only decides; `main.rs` runs what it decides. It needs
//! `lexopt` and `echod-kit` alone, so that its tests can live with
//! echo-bench's (`tools/echo-bench/tests/e2e_plan.rs`): cargo runs no
//! tests of a `harness = false` benchmark, and running this one is a
//! matter of minutes.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use echod_kit::args::{self, UsageError};

/// A load shape.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// What `--only` calls it, and its heading starts with.
    pub name: &'static str,
    /// The heading's description.
    pub title: &'static str,
    pub conns: usize,
    /// Lines in flight per connection; 1 is ping-pong.
    pub pipeline: usize,
    /// Bytes per line, terminator included.
    pub line_bytes: usize,
    /// Another client pushes 64 MiB at the server without reading, meanwhile.
    pub abuser: bool,
}

/// Every workload, in the order they run and are printed.
pub const WORKLOADS: [Workload; 7] = [
    Workload {
        name: "pingpong-1",
        title: "1 connection, ping-pong, 64 B lines (latency)",
        conns: 1,
        pipeline: 1,
        line_bytes: 64,
        abuser: false,
    },
    Workload {
        name: "pingpong-10",
        title: "10 connections, ping-pong, 64 B lines",
        conns: 10,
        pipeline: 1,
        line_bytes: 64,
        abuser: false,
    },
    Workload {
        name: "pingpong-100",
        title: "100 connections, ping-pong, 64 B lines",
        conns: 100,
        pipeline: 1,
        line_bytes: 64,
        abuser: false,
    },
    Workload {
        name: "pingpong-1000",
        title: "1,000 connections, ping-pong, 64 B lines",
        conns: 1000,
        pipeline: 1,
        line_bytes: 64,
        abuser: false,
    },
    Workload {
        name: "pipeline-10x64",
        title: "10 connections, pipeline of 64 lines of 64 B (throughput)",
        conns: 10,
        pipeline: 64,
        line_bytes: 64,
        abuser: false,
    },
    Workload {
        name: "bandwidth-4k",
        title: "1 connection, pipeline of 16 lines of 4 KiB (bandwidth)",
        conns: 1,
        pipeline: 16,
        line_bytes: 4096,
        abuser: false,
    },
    Workload {
        name: "abuse-100",
        title: "100 connections ping-pong while another client pushes 64 MiB without reading",
        conns: 100,
        pipeline: 1,
        line_bytes: 64,
        abuser: true,
    },
];

/// The part after the workloads: connection churn, each connection
/// echoing one line and closing, with instructions per cycle.
pub const CHURN: &str = "churn";
/// Then the noisy neighbour: small ping-pong clients alone, then beside a
/// bulk group.
pub const NOISY: &str = "noisy";
/// The part after those: system calls and instructions per line.
pub const COUNTS: &str = "counts";
/// The last part: memory per idle connection.
pub const IDLE: &str = "idle";

/// Rounds per workload when `--runs` is not given.
pub const DEFAULT_RUNS: usize = 5;
/// Seconds measured per run when `--secs` is not given.
pub const DEFAULT_SECS: f64 = 3.0;
/// Seconds of load before each measurement, so that connection set-up (a
/// thread per connection, say) is not measured.
pub const WARMUP_SECS: f64 = 1.0;
/// Idle connections held open when `--idle-conns` is not given.
pub const DEFAULT_IDLE_CONNS: usize = 10_000;
/// The most idle connections `--test` holds, whatever `--idle-conns` says.
pub const TEST_IDLE_CONNS: usize = 200;

/// Seconds measured per run under `--test`.
pub const TEST_SECS: f64 = 0.3;
/// Seconds of warm-up per run under `--test`.
pub const TEST_WARMUP_SECS: f64 = 0.2;

// What the parts cost, for the estimate announced at the start: the times
// of `--test` on the 2-core machine of docs/BENCHMARKS.md (about 50 s in
// all, after building echo-bench), and for the full-sized counts and idle
// connections, a rough extrapolation. An estimate, not a promise.

/// What one run costs besides its warm-up and measured time (starting the
/// server, connecting, draining, stopping), in seconds: a fixed part...
const RUN_OVERHEAD_SECS: f64 = 0.1;
/// ...and a part per connection (a thread per connection is slow to start).
const RUN_OVERHEAD_SECS_PER_CONN: f64 = 0.0013;
/// The counts of one peer, in seconds (a run under strace and two under
/// callgrind): full-sized, and under `--test`.
const COUNTS_SECS_PER_PEER: (f64, f64) = (15.0, 3.5);
/// The churn part's instruction counts of one peer (six runs under
/// callgrind: as shaped, with one cycle in flight, and with one in flight
/// echoing two lines), in seconds: full-sized, and under `--test` (measured
/// at 178 s for five peers, and 12 s: under `--test` valgrind's start-up is
/// most of it).
const CHURN_COUNTS_SECS_PER_PEER: (f64, f64) = (36.0, 3.5);
/// The idle part of one peer, in seconds: starting and stopping it...
const IDLE_SECS_PER_PEER: f64 = 0.8;
/// ...and connecting, per thousand idle connections.
const IDLE_SECS_PER_1000_CONNS: f64 = 0.3;

/// A parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--test`: each part once, briefly.
    pub test: bool,
    /// Rounds per workload, at least 1.
    pub runs: usize,
    /// Seconds measured per run, above 0.
    pub secs: f64,
    /// Seconds of warm-up before each measurement.
    pub warmup: f64,
    /// The part name (or part of a name) given by `--only` or as `NAME`.
    pub only: Option<String>,
    /// Whether `only` came as a bare `NAME`, which may be meant for another
    /// benchmark (`cargo bench NAME` passes it to every one): matching
    /// nothing then runs nothing, where `--only` would be an error.
    pub only_is_filter: bool,
    /// Where to write the results as JSON as well.
    pub json: Option<PathBuf>,
    /// Idle connections held open for the memory part.
    pub idle_conns: usize,
    /// Whether the counts run (`--no-counts` skips them).
    pub counts: bool,
}

/// The shape of the churn part: cycles of one 64-byte line, a few in
/// flight, as a balancer's health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnShape {
    /// Cycles in flight.
    pub conns: usize,
    pub line_bytes: usize,
    /// The two cycle counts run under callgrind: their difference cancels
    /// start-up and shutdown.
    pub callgrind_cycles: (usize, usize),
}

/// The shape of the noisy-neighbour part: small ping-pong clients, and the
/// bulk group that runs beside them in the second half of each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoisyShape {
    pub small_conns: usize,
    pub small_line_bytes: usize,
    pub bulk_conns: usize,
    pub bulk_line_bytes: usize,
    /// Bulk lines in flight per connection.
    pub bulk_pipeline: usize,
    /// The bulk threads' nice value, so that on echo-bench's CPU the small
    /// clients are not the ones kept waiting.
    pub bulk_nice: i32,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Options),
    Help,
}

/// The shape of the counts part: fixed line counts, so that the figures do
/// not drift with the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountsShape {
    pub conns: usize,
    /// Lines each connection echoes under strace.
    pub lines_per_conn: usize,
    /// The two line counts per connection run under callgrind: their
    /// difference cancels start-up and shutdown.
    pub callgrind_lines: (usize, usize),
}

impl Options {
    /// Whether the part `name` runs: the part of exactly the name `only`
    /// gives, or failing one, every part whose name contains it
    /// (`pingpong` selects all four ping-pong loads).
    pub fn selected(&self, name: &str) -> bool {
        if name == COUNTS && !self.counts {
            return false;
        }
        self.only.as_deref().is_none_or(|only| {
            if part_names().any(|part| part == only) {
                name == only
            } else {
                name.contains(only)
            }
        })
    }

    /// The workloads that run, in order.
    pub fn workloads(&self) -> impl Iterator<Item = &'static Workload> + '_ {
        WORKLOADS.iter().filter(|w| self.selected(w.name))
    }

    /// The names of the parts that run, in order.
    pub fn parts(&self) -> Vec<&'static str> {
        part_names().filter(|name| self.selected(name)).collect()
    }

    /// The counts' shape for this run.
    pub fn counts_shape(&self) -> CountsShape {
        counts_shape(self.test)
    }

    /// The churn part's shape for this run.
    pub fn churn_shape(&self) -> ChurnShape {
        churn_shape(self.test)
    }

    /// The noisy-neighbour part's shape for this run.
    pub fn noisy_shape(&self) -> NoisyShape {
        noisy_shape(self.test)
    }

    /// What one timed run costs, in seconds, with `conns` connections.
    fn run_secs(&self, conns: usize) -> f64 {
        let overhead = RUN_OVERHEAD_SECS + conns as f64 * RUN_OVERHEAD_SECS_PER_CONN;
        self.warmup + self.secs + overhead
    }

    /// About how long the selected parts take with `peers` peers.
    pub fn estimate(&self, peers: usize) -> Duration {
        let mut per_round: f64 = self.workloads().map(|w| self.run_secs(w.conns)).sum();
        if self.selected(CHURN) {
            per_round += self.run_secs(self.churn_shape().conns);
        }
        if self.selected(NOISY) {
            let shape = self.noisy_shape();
            per_round += 2.0 * self.run_secs(shape.small_conns + shape.bulk_conns);
        }
        let mut secs = per_round * (peers * self.runs) as f64;
        if self.selected(CHURN) && self.counts {
            let per_peer = if self.test {
                CHURN_COUNTS_SECS_PER_PEER.1
            } else {
                CHURN_COUNTS_SECS_PER_PEER.0
            };
            secs += peers as f64 * per_peer;
        }
        if self.selected(COUNTS) {
            let per_peer = if self.test {
                COUNTS_SECS_PER_PEER.1
            } else {
                COUNTS_SECS_PER_PEER.0
            };
            secs += peers as f64 * per_peer;
        }
        if self.selected(IDLE) {
            let thousands = self.idle_conns as f64 / 1000.0;
            secs += peers as f64 * (IDLE_SECS_PER_PEER + thousands * IDLE_SECS_PER_1000_CONNS);
        }
        Duration::from_secs_f64(secs)
    }

    /// What is about to run and about how long it takes, said before it
    /// starts, with `peers` peers: a plain `cargo bench` starts the whole
    /// comparison.
    pub fn announcement(&self, peers: usize) -> String {
        let mut out = format!(
            "e2e: about {} for the parts below\n",
            human(self.estimate(peers))
        );
        let workloads: Vec<&str> = self.workloads().map(|w| w.name).collect();
        if !workloads.is_empty() {
            let line = format!(
                "{}: {peers} peers x {} of {} s warm-up + {} s each",
                workloads.join(", "),
                plural(self.runs, "run"),
                self.warmup,
                self.secs
            );
            let _ = writeln!(out, "  {}", wrap(&line, 74, 4));
        }
        let timed = |part: &str, what: String| {
            let line = format!(
                "{part}: {what}: {peers} peers x {} of {} s warm-up + {} s each",
                plural(self.runs, "run"),
                self.warmup,
                self.secs
            );
            format!("  {}\n", wrap(&line, 74, 4))
        };
        if self.selected(CHURN) {
            let shape = self.churn_shape();
            let counted = if self.counts {
                ", then counted under valgrind"
            } else {
                ""
            };
            let what = format!("{} cycles of one line in flight{counted}", shape.conns);
            out.push_str(&timed(CHURN, what));
        }
        if self.selected(NOISY) {
            let shape = self.noisy_shape();
            let what = format!(
                "{} small clients alone, then beside {} bulk",
                shape.small_conns, shape.bulk_conns
            );
            out.push_str(&timed(NOISY, what));
        }
        if self.selected(COUNTS) {
            let shape = self.counts_shape();
            let _ = writeln!(
                out,
                "  counts: {} connections x {} lines, under strace and valgrind",
                shape.conns, shape.lines_per_conn
            );
        }
        if self.selected(IDLE) {
            let _ = writeln!(
                out,
                "  idle-{}: memory per idle connection",
                self.idle_conns
            );
        }
        if !self.test && self.only.is_none() {
            out.push_str(
                "For less, give --only NAME, --runs N, --secs S or --test \
                 (`cargo bench --bench e2e -- --help`).\n",
            );
        }
        out
    }
}

/// Every part's name, in the order they run.
pub fn part_names() -> impl Iterator<Item = &'static str> {
    WORKLOADS
        .iter()
        .map(|w| w.name)
        .chain([CHURN, NOISY, COUNTS, IDLE])
}

/// The churn part's shape: 8 cycles in flight; under callgrind 200 and
/// 1,200 cycles, or 20 and 60 under `--test`.
pub fn churn_shape(test: bool) -> ChurnShape {
    ChurnShape {
        conns: 8,
        line_bytes: 64,
        callgrind_cycles: if test { (20, 60) } else { (200, 1200) },
    }
}

/// The noisy-neighbour part's shape: 50 small clients of 64 B ping-pong
/// beside 4 bulk connections of 64 lines of 4 KiB in flight at nice 19, as
/// in the measurement of docs/BENCHMARKS.md; 10 beside 1 under `--test`.
pub fn noisy_shape(test: bool) -> NoisyShape {
    NoisyShape {
        small_conns: if test { 10 } else { 50 },
        small_line_bytes: 64,
        bulk_conns: if test { 1 } else { 4 },
        bulk_line_bytes: 4096,
        bulk_pipeline: 64,
        bulk_nice: 19,
    }
}

/// The counts' shape: 100 connections of 500 lines, or 10 of 20 under
/// `--test`.
pub fn counts_shape(test: bool) -> CountsShape {
    if test {
        CountsShape {
            conns: 10,
            lines_per_conn: 20,
            callgrind_lines: (5, 10),
        }
    } else {
        CountsShape {
            conns: 100,
            lines_per_conn: 500,
            callgrind_lines: (20, 120),
        }
    }
}

/// The heading of the counts table, with the shape it measured.
pub fn counts_heading(shape: CountsShape) -> String {
    format!(
        "## counts: {} connections, ping-pong, 64 B lines",
        shape.conns
    )
}

/// The `--help` text, with every default and every part's name.
pub fn usage() -> String {
    let parts: Vec<&str> = part_names().collect();
    format!(
        "\
Usage: cargo bench --bench e2e -- [OPTIONS] [NAME]

The end-to-end comparison: echod against the floor (the least a readiness
server can do), tokio (current-thread and multi-thread) and a thread per
connection, under the same loads. Each workload runs every peer in turn,
round after round, and its table gives the medians. Then connection churn
(cycles/s, CPU and instructions per cycle), the noisy neighbour (small
clients alone and beside a bulk group), the counts (system calls and
instructions per echoed line, from fixed line counts) and the memory per
idle connection. Tables go to stdout as Markdown, progress to stderr.
With the defaults it all takes about 20 minutes.

Options:
      --only NAME      Run only the part NAME, or every part whose name
                       contains NAME (pingpong: the four ping-pong loads).
                       A NAME that matches no part is an error. The parts:
                       {parts}
      NAME             As --only NAME, the way `cargo bench NAME` passes
                       it; a NAME that matches no part runs nothing (it
                       may be meant for another benchmark)
      --runs N         Rounds per workload (default: {DEFAULT_RUNS})
      --secs S         Seconds measured per run, after {WARMUP_SECS} s of warm-up
                       (default: {DEFAULT_SECS})
      --idle-conns N   Idle connections the memory part holds open
                       (default: {DEFAULT_IDLE_CONNS})
      --no-counts      Skip the counts (system calls under strace,
                       instructions under valgrind, per line and per
                       churn cycle)
      --json FILE      Also write the results as JSON, for benches/chart.py
                       (default: none)
      --test           Each part once, briefly (the CI smoke run, about a
                       minute): 1 run of {TEST_SECS} s after {TEST_WARMUP_SECS} s of warm-up,
                       {test_counts} connections counted, at most {TEST_IDLE_CONNS} idle
                       connections
      --bench          Passed by `cargo bench`; ignored
  -h, --help           Print this help

Exit status: 0 when every part ran, 1 if a part failed (a server did not
start, echo-bench counted an error), 2 for a bad command line.
",
        parts = wrap(&parts.join(", "), 53, 23),
        test_counts = counts_shape(true).conns,
    )
}

/// Parses the benchmark's arguments (`args` without the program name).
///
/// # Errors
///
/// An unknown option, a bad value, or a selection that runs nothing
/// (`--only` naming no part).
pub fn parse_args<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut options = Options {
        test: false,
        runs: DEFAULT_RUNS,
        secs: DEFAULT_SECS,
        warmup: WARMUP_SECS,
        only: None,
        only_is_filter: false,
        json: None,
        idle_conns: DEFAULT_IDLE_CONNS,
        counts: true,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("test") => options.test = true,
            // Passed by `cargo bench`; this harness always benchmarks.
            Long("bench") => {}
            Long("runs") => options.runs = args::number(parser.value()?, "--runs")?,
            Long("secs") => options.secs = args::number(parser.value()?, "--secs")?,
            Long("only") => {
                options.only = Some(args::string(parser.value()?, "--only")?);
                options.only_is_filter = false;
            }
            Long("json") => options.json = Some(parser.value()?.into()),
            Long("idle-conns") => {
                options.idle_conns = args::positive(parser.value()?, "--idle-conns")?
            }
            Long("no-counts") => options.counts = false,
            Short('h') | Long("help") => return Ok(Command::Help),
            // A filter word, as `cargo bench NAME` passes it.
            Value(name) => {
                options.only = Some(args::string(name, "NAME")?);
                options.only_is_filter = true;
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if options.test {
        options.runs = 1;
        options.secs = TEST_SECS;
        options.warmup = TEST_WARMUP_SECS;
        options.idle_conns = options.idle_conns.min(TEST_IDLE_CONNS);
    }
    if options.runs == 0 || options.secs.is_nan() || options.secs <= 0.0 {
        return Err(UsageError("--runs and --secs must be above 0".into()));
    }
    if let Some(only) = options.only.as_deref()
        && !options.only_is_filter
        && options.parts().is_empty()
    {
        let message = if only == COUNTS {
            "--only counts and --no-counts leave nothing to run".to_string()
        } else {
            format!(
                "invalid --only '{only}': no part is named or contains it; the parts are {}",
                part_names().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(UsageError(message));
    }
    Ok(Command::Run(options))
}

/// `1 run`, `5 runs`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration the way a person estimates one: `40 s`, `15 minutes`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 120.0 {
        format!("{:.0} s", secs.max(1.0))
    } else {
        format!("{:.0} minutes", secs / 60.0)
    }
}

/// `text` broken at spaces into lines of at most `width` characters, every
/// line after the first indented by `indent` spaces.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split(' ') {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}
