//! What `echo-bench` measures and prints: each thread's `Report` and their
//! merged total, a progress line each second on stderr, and a
//! final summary on stdout, as text or as one JSON line.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::args::Options;

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

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Latency of every line echoed while measuring, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Lines echoed while measuring.
    pub lines: u64,
    /// Lines echoed in any phase: warm-up, measurement and drain.
    pub all_lines: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// How long the measurement lasted.
    pub measured: Duration,
    /// How long this thread's connections took to come up.
    pub connect_time: Duration,
    pub errors: Errors,
}

impl Report {
    /// Adds up the threads' reports. The measured time is the longest
    /// thread's (they start together and stop at the same deadline).
    pub fn merge(reports: Vec<Report>) -> Option<Report> {
        let mut reports = reports.into_iter();
        let mut total = reports.next()?;
        for report in reports {
            // Same bounds in every thread, so adding cannot fail.
            let _ = total.latency.add(&report.latency);
            total.lines += report.lines;
            total.all_lines += report.all_lines;
            total.bytes_sent += report.bytes_sent;
            total.bytes_received += report.bytes_received;
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

    /// The summary for people.
    pub fn text(&self, options: &Options) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "echo-bench {}: {}", options.addr, describe(options));
        let warmup = if options.warmup.is_zero() {
            String::new()
        } else {
            format!(" after {:.2} s warm-up", options.warmup.as_secs_f64())
        };
        let _ = writeln!(
            out,
            "  measured    {:.2} s{warmup} (connections up in {})",
            self.measured.as_secs_f64(),
            human_duration(self.connect_time.as_nanos() as u64)
        );
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
        if self.latency.is_empty() {
            let _ = writeln!(out, "  latency     no line completed");
        } else {
            let _ = write!(out, "  latency    ");
            for (label, _, q) in PERCENTILES {
                let _ = write!(
                    out,
                    " {label} {}  ",
                    human_duration(self.latency.value_at_quantile(q / 100.0))
                );
            }
            let _ = writeln!(out, " max {}", human_duration(self.latency.max()));
        }
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
        out
    }

    /// The summary as one JSON object on one line. Latencies are in
    /// nanoseconds, rates per second, sizes in bytes.
    pub fn json(&self, options: &Options) -> String {
        let mut out = String::from("{");
        let _ = write!(
            out,
            "\"addr\":\"{}\",\"conns\":{},\"pipeline\":{},\"line_bytes\":{},\"framing\":\"{}\",",
            options.addr,
            options.conns,
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
        out.push_str("\"latency_ns\":{");
        for (_, key, q) in PERCENTILES {
            let _ = write!(
                out,
                "\"{key}\":{},",
                self.latency.value_at_quantile(q / 100.0)
            );
        }
        let _ = write!(
            out,
            "\"max\":{},\"mean\":{:.0}}},",
            self.latency.max(),
            self.latency.mean()
        );
        let e = &self.errors;
        let _ = write!(
            out,
            "\"errors\":{{\"total\":{},\"connect\":{},\"mismatch\":{},\"early_close\":{},\"timeout\":{},\"other\":{}}}}}",
            e.total(),
            e.connect,
            e.mismatch,
            e.early_close,
            e.timeout,
            e.io
        );
        out
    }
}

/// The run's shape in a few words.
pub fn describe(options: &Options) -> String {
    let load = match options.rate {
        Some(rate) => format!("open loop at {} lines/s", thousands(rate.round() as u64)),
        None => format!("pipeline {}", options.pipeline),
    };
    let conns = match options.conns {
        1 => "1 connection".to_string(),
        n => format!("{} connections", thousands(n as u64)),
    };
    format!(
        "{conns}, {load}, {}-byte {} lines",
        options.line_bytes,
        options.framing.name()
    )
}

/// One progress line.
pub fn progress_line(
    elapsed: Duration,
    rate: f64,
    up: u64,
    conns: usize,
    errors: u64,
    phase: &str,
) -> String {
    format!(
        "[{:>6.1}s] {:>12} lines/s  {:>7}/{} connections up  {} errors{phase}",
        elapsed.as_secs_f64(),
        thousands(rate.round() as u64),
        thousands(up),
        thousands(conns as u64),
        thousands(errors)
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
