//! What `echo-bench` measures and prints: each thread's `Report` and their
//! merged total, a progress line each second on stderr (each labelled with
//! the phase it measured, from the run's `Timeline`), and a final summary
//! on stdout, as text or as one JSON line.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::args::{Length, Options};

/// How long a progress interval lasts, unless a phase ends sooner.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The percentiles reported, with their labels.
const PERCENTILES: [(&str, &str, f64); 4] = [
    ("p50", "p50", 50.0),
    ("p90", "p90", 90.0),
    ("p99", "p99", 99.0),
    ("p99.9", "p99_9", 99.9),
];

/// Errors by kind. Any of them makes the run fail.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    pub connect: u64,
    pub mismatch: u64,
    pub early_close: u64,
    pub timeout: u64,
    pub io: u64,
    /// The first few, described, for the summary.
    pub examples: Vec<String>,
}

/// Examples of errors kept per thread.
pub const MAX_EXAMPLES: usize = 5;

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.mismatch + self.early_close + self.timeout + self.io
    }

    pub fn merge(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.mismatch += other.mismatch;
        self.early_close += other.early_close;
        self.timeout += other.timeout;
        self.io += other.io;
        for example in &other.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(example.clone());
            }
        }
    }
}

/// Latencies above this are recorded as this (the histograms' upper bound).
const MAX_LATENCY: Duration = Duration::from_secs(120);

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Latency of every line echoed while measuring, in nanoseconds.
    pub latency: Histogram<u64>,
    /// With `--churn`: from when each measured cycle began (or was due, in
    /// open loop) until its connection was established, in nanoseconds.
    pub connect_latency: Histogram<u64>,
    /// With `--churn`: from when each measured cycle began (or was due)
    /// until the server's FIN after its last echo, in nanoseconds.
    pub cycle_latency: Histogram<u64>,
    /// With `--churn`: cycles completed while measuring.
    pub cycles: u64,
    /// With `--churn`: cycles completed in any phase.
    pub all_cycles: u64,
    /// Lines echoed while measuring.
    pub lines: u64,
    /// Lines echoed in any phase: warm-up, measurement and drain.
    pub all_lines: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Connections that came up; the others are counted as connect errors.
    pub connected: u64,
    /// How long the measurement lasted.
    pub measured: Duration,
    /// How long this thread's connections took to come up.
    pub connect_time: Duration,
    pub errors: Errors,
    /// The whole process's CPU time (user + system), once the run is over;
    /// `None` in a thread's own report.
    pub client_cpu: Option<Duration>,
}

impl Report {
    /// An empty report, every count at zero.
    pub fn new() -> Result<Report, String> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3)
                .map_err(|err| format!("histogram: {err}"))
        };
        Ok(Report {
            latency: histogram()?,
            connect_latency: histogram()?,
            cycle_latency: histogram()?,
            cycles: 0,
            all_cycles: 0,
            lines: 0,
            all_lines: 0,
            bytes_sent: 0,
            bytes_received: 0,
            connected: 0,
            measured: Duration::ZERO,
            connect_time: Duration::ZERO,
            errors: Errors::default(),
            client_cpu: None,
        })
    }

    /// Adds up the threads' reports. The measured time is the longest
    /// thread's (they start together and stop at the same deadline).
    pub fn merge(reports: Vec<Report>) -> Option<Report> {
        let mut reports = reports.into_iter();
        let mut total = reports.next()?;
        for report in reports {
            // Same bounds in every thread, so adding cannot fail.
            let _ = total.latency.add(&report.latency);
            let _ = total.connect_latency.add(&report.connect_latency);
            let _ = total.cycle_latency.add(&report.cycle_latency);
            total.cycles += report.cycles;
            total.all_cycles += report.all_cycles;
            total.lines += report.lines;
            total.all_lines += report.all_lines;
            total.bytes_sent += report.bytes_sent;
            total.bytes_received += report.bytes_received;
            total.connected += report.connected;
            total.measured = total.measured.max(report.measured);
            total.connect_time = total.connect_time.max(report.connect_time);
            total.errors.merge(&report.errors);
        }
        Some(total)
    }

    fn per_second(&self, count: u64) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 { count as f64 / secs } else { 0.0 }
    }

    /// The summary for people, under the run's `header` unless
    /// `with_header` is false (the header is already on the screen).
    pub fn text(&self, options: &Options, with_header: bool) -> String {
        let mut out = String::new();
        if with_header {
            let _ = writeln!(out, "{}", header(options));
        }
        if self.connected == 0 {
            // Nothing was measured, and a connect time would only suggest
            // otherwise: say what happened, then the errors say why.
            let _ = writeln!(
                out,
                "  connect     failed: none of {} came up",
                connections(options.conns)
            );
            self.write_errors(&mut out);
            return out;
        }
        let warmup = if options.warmup.is_zero() {
            String::new()
        } else {
            format!(" after {:.2} s warm-up", options.warmup.as_secs_f64())
        };
        if let Some(k) = options.churn {
            let shape = match options.rate {
                Some(_) => format!(
                    "open loop, at most {} in flight",
                    thousands(options.conns as u64)
                ),
                None => format!("{} in flight", thousands(options.conns as u64)),
            };
            let _ = writeln!(
                out,
                "  measured    {:.2} s{warmup} (cycles of {}, {shape})",
                self.measured.as_secs_f64(),
                plural(k, "line")
            );
            let _ = writeln!(
                out,
                "  cycles      {} completed, {} cycles/s, {} connections opened in all",
                thousands(self.cycles),
                thousands(self.per_second(self.cycles).round() as u64),
                thousands(self.connected)
            );
            let _ = writeln!(
                out,
                "{}",
                percentiles_line("connect", &self.connect_latency)
            );
            let _ = writeln!(out, "{}", percentiles_line("cycle", &self.cycle_latency));
        } else {
            let up = if self.connected == options.conns as u64 {
                "connections".to_string()
            } else {
                format!(
                    "{} of {} connections",
                    thousands(self.connected),
                    thousands(options.conns as u64)
                )
            };
            let _ = writeln!(
                out,
                "  measured    {:.2} s{warmup} ({up} up in {})",
                self.measured.as_secs_f64(),
                human_duration(self.connect_time.as_nanos() as u64)
            );
        }
        let _ = writeln!(
            out,
            "  lines       {} echoed and verified, {} lines/s",
            thousands(self.lines),
            thousands(self.per_second(self.lines).round() as u64)
        );
        let _ = writeln!(
            out,
            "  throughput  {:.2} MB/s sent, {:.2} MB/s received",
            self.per_second(self.bytes_sent) / 1e6,
            self.per_second(self.bytes_received) / 1e6
        );
        let _ = writeln!(out, "{}", percentiles_line("latency", &self.latency));
        if let (Some(_), Some(cpu)) = (options.churn, self.client_cpu) {
            let per_cycle = cpu.as_nanos() as f64 / self.all_cycles.max(1) as f64;
            let _ = writeln!(
                out,
                "  client CPU  {:.2} s, {} per cycle",
                cpu.as_secs_f64(),
                human_duration(per_cycle.round() as u64)
            );
        }
        self.write_errors(&mut out);
        out
    }

    /// The summary's last line: no errors, or how many of each kind and
    /// the first few.
    fn write_errors(&self, out: &mut String) {
        let errors = &self.errors;
        if errors.total() == 0 {
            let _ = writeln!(out, "  errors      none");
        } else {
            let _ = writeln!(
                out,
                "  errors      {} ({} connect, {} mismatch, {} early close, {} timeout, {} other)",
                thousands(errors.total()),
                errors.connect,
                errors.mismatch,
                errors.early_close,
                errors.timeout,
                errors.io
            );
            for example in &errors.examples {
                let _ = writeln!(out, "              {example}");
            }
        }
    }

    /// The summary as one JSON object on one line. Latencies are in
    /// nanoseconds, rates per second, sizes in bytes.
    pub fn json(&self, options: &Options) -> String {
        let mut out = String::from("{");
        let _ = write!(
            out,
            "\"addr\":\"{}\",\"conns\":{},\"connected\":{},\"pipeline\":{},\"line_bytes\":{},\"framing\":\"{}\",",
            options.addr,
            options.conns,
            self.connected,
            options.pipeline,
            options.line_bytes,
            options.framing.name()
        );
        match options.rate {
            Some(rate) => {
                let _ = write!(out, "\"rate\":{rate},");
            }
            None => out.push_str("\"rate\":null,"),
        }
        let _ = write!(
            out,
            "\"threads\":{},\"warmup_s\":{},\"measured_s\":{:.6},\"connect_s\":{:.6},",
            options.threads,
            options.warmup.as_secs_f64(),
            self.measured.as_secs_f64(),
            self.connect_time.as_secs_f64()
        );
        let _ = write!(
            out,
            "\"lines\":{},\"lines_all_phases\":{},\"lines_per_s\":{:.1},\"bytes_sent\":{},\"bytes_received\":{},\"sent_bytes_per_s\":{:.1},\"received_bytes_per_s\":{:.1},",
            self.lines,
            self.all_lines,
            self.per_second(self.lines),
            self.bytes_sent,
            self.bytes_received,
            self.per_second(self.bytes_sent),
            self.per_second(self.bytes_received)
        );
        let _ = write!(out, "\"latency_ns\":{},", percentiles_json(&self.latency));
        let e = &self.errors;
        let _ = write!(
            out,
            "\"errors\":{{\"total\":{},\"connect\":{},\"mismatch\":{},\"early_close\":{},\"timeout\":{},\"other\":{}}}",
            e.total(),
            e.connect,
            e.mismatch,
            e.early_close,
            e.timeout,
            e.io
        );
        // Added after the fields above, so that a reader taking the first
        // "p99" or "total" still finds the lines' and the errors'.
        match options.churn {
            Some(k) => {
                let _ = write!(
                    out,
                    ",\"churn\":{k},\"cycles\":{},\"cycles_all_phases\":{},\"cycles_per_s\":{:.1},\"connect_latency_ns\":{},\"cycle_latency_ns\":{}",
                    self.cycles,
                    self.all_cycles,
                    self.per_second(self.cycles),
                    percentiles_json(&self.connect_latency),
                    percentiles_json(&self.cycle_latency)
                );
            }
            None => out.push_str(",\"churn\":null"),
        }
        if let Some(cpu) = self.client_cpu {
            let _ = write!(out, ",\"client_cpu_s\":{:.6}", cpu.as_secs_f64());
        }
        out.push('}');
        out
    }
}

/// The line that names the run: its target and its shape, as in
/// `echo-bench 127.0.0.1:12321: 100 connections, pipeline 1, 64-byte crlf
/// lines`.
pub fn header(options: &Options) -> String {
    if let Some(k) = options.churn {
        let load = match options.rate {
            Some(rate) => format!(
                "open loop at {} connections/s, at most {} in flight",
                thousands(rate.round() as u64),
                thousands(options.conns as u64)
            ),
            None => format!("{} in flight", thousands(options.conns as u64)),
        };
        return format!(
            "echo-bench {}: churn, cycles of {} (pipeline {}), {load}, {}-byte {} lines",
            options.addr,
            plural(k, "line"),
            options.pipeline,
            options.line_bytes,
            options.framing.name()
        );
    }
    let load = match options.rate {
        Some(rate) => format!("open loop at {} lines/s", thousands(rate.round() as u64)),
        None => format!("pipeline {}", options.pipeline),
    };
    format!(
        "echo-bench {}: {}, {load}, {}-byte {} lines",
        options.addr,
        connections(options.conns),
        options.line_bytes,
        options.framing.name()
    )
}

/// Whether the summary on stdout starts with the header again. It does,
/// so that a saved summary says what it measured, unless the header is
/// already on the same screen: printed at the start on stderr, with both
/// streams on a terminal.
pub fn summary_repeats_header(
    header_printed: bool,
    stdout_is_terminal: bool,
    stderr_is_terminal: bool,
) -> bool {
    !(header_printed && stdout_is_terminal && stderr_is_terminal)
}

/// `  connect     p50 41.2 µs   p90 ...  max 1.23 ms`: a histogram's
/// percentiles under `label`, or that none was recorded.
fn percentiles_line(label: &str, histogram: &Histogram<u64>) -> String {
    let mut out = format!("  {label:<11}");
    if histogram.is_empty() {
        out.push_str(" none completed");
        return out;
    }
    for (name, _, q) in PERCENTILES {
        let _ = write!(
            out,
            " {name} {}  ",
            human_duration(histogram.value_at_quantile(q / 100.0))
        );
    }
    let _ = write!(out, " max {}", human_duration(histogram.max()));
    out
}

/// The JSON object of a histogram's percentiles, max and mean, in ns.
fn percentiles_json(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("{");
    for (_, key, q) in PERCENTILES {
        let _ = write!(out, "\"{key}\":{},", histogram.value_at_quantile(q / 100.0));
    }
    let _ = write!(
        out,
        "\"max\":{},\"mean\":{:.0}}}",
        histogram.max(),
        histogram.mean()
    );
    out
}

/// `1 line`, `3 lines`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// `1 connection`, `1,000 connections`.
fn connections(n: usize) -> String {
    match n {
        1 => "1 connection".to_string(),
        n => format!("{} connections", thousands(n as u64)),
    }
}

/// What the load was doing at a moment of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connections are being opened; no line is sent yet.
    Connecting,
    /// Lines are sent and checked but not recorded.
    WarmUp,
    /// Lines are recorded: the figures of the summary.
    Measuring,
    /// No new lines; the lines in flight are awaited.
    Draining,
}

impl Phase {
    /// The label a progress line ends with. The measured phase, the one
    /// that matters, is the one left unlabelled.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Connecting => " (connecting)",
            Phase::WarmUp => " (warm-up)",
            Phase::Measuring => "",
            Phase::Draining => " (draining)",
        }
    }
}

/// When the run's phases begin and end, as far as the reporter knows: the
/// load's start is learnt when it happens, and the other boundaries follow
/// from it and the options.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// When the load began; `None` while connections are being opened.
    pub load_start: Option<Instant>,
    /// The warm-up's length, from `load_start`.
    pub warmup: Duration,
    /// The measurement's length after the warm-up, when the run is timed;
    /// a run of `--lines-per-conn` measures until its lines are done.
    pub measure: Option<Duration>,
}

impl Timeline {
    /// The timeline of a run of `options` whose load has not started yet.
    pub fn new(options: &Options) -> Timeline {
        Timeline {
            load_start: None,
            warmup: options.warmup,
            measure: match options.length {
                Length::Duration(d) => Some(d),
                Length::LinesPerConn(_) | Length::Cycles(_) => None,
            },
        }
    }

    /// The phase the run is in at `t`.
    pub fn phase_at(&self, t: Instant) -> Phase {
        let Some(start) = self.load_start.filter(|start| t >= *start) else {
            return Phase::Connecting;
        };
        let elapsed = t - start;
        match self.measure {
            _ if elapsed < self.warmup => Phase::WarmUp,
            Some(measure) if elapsed >= self.warmup + measure => Phase::Draining,
            _ => Phase::Measuring,
        }
    }

    /// The phase a progress interval from `from` to `to` measured. Intervals
    /// end at phase boundaries (`next_tick`), so an interval lies in one
    /// phase; its midpoint decides, so that the few microseconds the
    /// reporter wakes late do not count.
    pub fn phase_of(&self, from: Instant, to: Instant) -> Phase {
        self.phase_at(from + (to.saturating_duration_since(from)) / 2)
    }

    /// When the progress interval that begins at `from` ends: a second
    /// later, or at the next phase boundary if that comes first. A phase
    /// that ends just after a whole second gets a short last interval; its
    /// rate is noisier, but it is the rate of that phase alone.
    pub fn next_tick(&self, from: Instant) -> Instant {
        let tick = from + PROGRESS_INTERVAL;
        self.next_boundary(from)
            .map_or(tick, |boundary| boundary.min(tick))
    }

    /// The first phase boundary after `t`: the end of the warm-up or of the
    /// measurement, if either is still to come.
    fn next_boundary(&self, t: Instant) -> Option<Instant> {
        let start = self.load_start?;
        let warmup_end = start + self.warmup;
        let measure_end = self.measure.map(|measure| warmup_end + measure);
        [Some(warmup_end), measure_end]
            .into_iter()
            .flatten()
            .find(|boundary| *boundary > t)
    }
}

/// One progress line: `phase` is the phase the interval measured.
pub fn progress_line(
    elapsed: Duration,
    rate: f64,
    unit: &str,
    up: u64,
    conns: usize,
    errors: u64,
    phase: Phase,
) -> String {
    format!(
        "[{:>6.1}s] {:>12} {unit}  {:>7}/{} connections up  {} errors{}",
        elapsed.as_secs_f64(),
        thousands(rate.round() as u64),
        thousands(up),
        thousands(conns as u64),
        thousands(errors),
        phase.label()
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds with a unit people read at a glance: `850 ns`, `41.2 µs`,
/// `1.23 ms`, `2.50 s`.
pub fn human_duration(ns: u64) -> String {
    let ns_f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns_f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns_f / 1e6)
    } else {
        format!("{:.2} s", ns_f / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Command, parse_args};

    fn options(args: &[&str]) -> Options {
        let argv = std::iter::once("echo-bench").chain(args.iter().copied());
        match parse_args(argv) {
            Ok(Command::Run(options)) => options,
            _ => panic!("{args:?} is a run"),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The progress lines a run with `timeline` prints up to `end` (ms after
    /// the load's start): each interval's end and its phase, as the
    /// reporter cuts them.
    fn intervals(timeline: &Timeline, end: u64) -> Vec<(u64, Phase)> {
        let start = timeline.load_start.expect("the load has started");
        let at = |t: Instant| (t - start).as_millis() as u64;
        let mut from = start;
        let mut out = Vec::new();
        loop {
            let to = timeline.next_tick(from);
            if at(to) > end {
                return out;
            }
            out.push((at(to), timeline.phase_of(from, to)));
            from = to;
        }
    }

    #[test]
    fn each_progress_interval_is_labelled_with_the_phase_it_measured() {
        use Phase::*;
        let mut timeline = Timeline::new(&options(&["-w", "1.5", "-d", "2"]));
        let before = Instant::now();
        assert_eq!(timeline.phase_at(before), Connecting);
        timeline.load_start = Some(before + ms(40));
        // Warm-up to 1.5 s, measured to 3.5 s, then draining: no interval
        // straddles a boundary, so the last measured one is not "draining"
        // and the warm-up's are labelled.
        assert_eq!(
            intervals(&timeline, 6_000),
            [
                (1_000, WarmUp),
                (1_500, WarmUp),
                (2_500, Measuring),
                (3_500, Measuring),
                (4_500, Draining),
                (5_500, Draining),
            ]
        );
        assert_eq!(Measuring.label(), "");
        assert_eq!(WarmUp.label(), " (warm-up)");
    }

    #[test]
    fn an_interval_is_cut_short_where_its_phase_ends() {
        use Phase::*;
        let mut timeline = Timeline::new(&options(&["-d", "2.1"]));
        timeline.load_start = Some(Instant::now());
        assert_eq!(
            intervals(&timeline, 3_200),
            [
                (1_000, Measuring),
                (2_000, Measuring),
                (2_100, Measuring),
                (3_100, Draining)
            ]
        );
        // A run of a line count has no end known in advance: it measures
        // until its lines are done.
        let mut timeline = Timeline::new(&options(&["-n", "10", "-w", "0.5"]));
        timeline.load_start = Some(Instant::now());
        assert_eq!(
            intervals(&timeline, 2_600),
            [(500, WarmUp), (1_500, Measuring), (2_500, Measuring)]
        );
    }

    #[test]
    fn the_header_is_printed_once_on_a_terminal() {
        // Printed on stderr at the start, both streams on one terminal.
        assert!(!summary_repeats_header(true, true, true));
        // Stdout saved to a file, or progress sent elsewhere: the summary
        // names its run.
        assert!(summary_repeats_header(true, false, true));
        assert!(summary_repeats_header(true, true, false));
        // --quiet printed no header.
        assert!(summary_repeats_header(false, true, true));
        let options = options(&["-c", "100"]);
        assert_eq!(
            header(&options),
            "echo-bench 127.0.0.1:12321: 100 connections, pipeline 1, 64-byte crlf lines"
        );
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_duration(850), "850 ns");
        assert_eq!(human_duration(41_234), "41.2 µs");
        assert_eq!(human_duration(1_234_567), "1.23 ms");
        assert_eq!(human_duration(2_500_000_000), "2.50 s");
    }
}
