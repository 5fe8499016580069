//! What the run counted and measured, the one-line status printed each
//! second, the final report, and the verdict.

use std::fmt::Write as _;
use std::time::Duration;

use echod_kit::process::Sample;
use hdrhistogram::Histogram;

use crate::options::Options;

/// Counters and latencies, kept by the soak as it runs.
#[derive(Debug)]
pub struct Tally {
    /// Well-behaved line latencies, microseconds, for the whole run.
    pub latency: Histogram<u64>,
    /// The same, for the current second only.
    pub latency_second: Histogram<u64>,
    /// Well-behaved lines whose echo came back complete.
    pub steady_lines: u64,
    /// Well-behaved connections that finished cleanly at the end.
    pub steady_finished: usize,
    /// Echo bytes that differed from what was owed, any client.
    pub corrupt_bytes: u64,
    /// Connections that lost echoes owed to them, with the first few reasons.
    pub losses: u64,
    pub loss_reasons: Vec<String>,
    /// Abusive episodes started and finished, by role name.
    pub episodes: Vec<(&'static str, u64)>,
    /// Connections closed by echod before they were served (rejected at
    /// `max-connections`, or reset while queued).
    pub rejected: u64,
    /// Connections whose handshake failed or timed out.
    pub connect_failures: u64,
    /// Churn probes started, and served with their echo.
    pub probes: u64,
    pub probes_served: u64,
    /// Resets sent mid-stream.
    pub resets: u64,
    /// Waiters (connections made while echod had no descriptors) served,
    /// unserved, served before the limit came back, and the longest wait
    /// after descriptors came back.
    pub waiters_served: u64,
    pub waiters_early: u64,
    pub waiters_rejected: u64,
    pub waiters_unserved: u64,
    pub recovery: Option<Duration>,
}

/// One second of the run, as printed on the status line.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Seconds since the clients started.
    pub second: u64,
    /// echod's resource use at the end of the second, if known.
    pub sample: Option<Sample>,
    /// echod's CPU use over the second, as a share of one core.
    pub cpu_share: Option<f64>,
    /// Whether echod was held out of descriptors.
    pub exhausted: bool,
    /// Well-behaved lines echoed per second over the interval, and their p99.
    pub lines_per_second: f64,
    pub p99: Duration,
}

/// echod's state before and after the run.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    pub baseline: Option<Sample>,
    pub settled: Option<Sample>,
    /// How long the descriptors took to come back to baseline, if they did.
    pub settle_time: Option<Duration>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        // 1 µs to 60 s at three significant figures.
        let histogram = || {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid constants")
        };
        Tally {
            latency: histogram(),
            latency_second: histogram(),
            steady_lines: 0,
            steady_finished: 0,
            corrupt_bytes: 0,
            losses: 0,
            loss_reasons: Vec::new(),
            episodes: Vec::new(),
            rejected: 0,
            connect_failures: 0,
            probes: 0,
            probes_served: 0,
            resets: 0,
            waiters_served: 0,
            waiters_early: 0,
            waiters_rejected: 0,
            waiters_unserved: 0,
            recovery: None,
        }
    }

    /// Records one well-behaved line's echo latency.
    pub fn record_latency(&mut self, latency: Duration) {
        let micros = latency.as_micros().clamp(1, u64::MAX as u128) as u64;
        self.latency.saturating_record(micros);
        self.latency_second.saturating_record(micros);
        self.steady_lines += 1;
    }

    /// Records that a connection lost echoes owed to it.
    pub fn record_loss(&mut self, reason: String) {
        self.losses += 1;
        if self.loss_reasons.len() < 10 {
            self.loss_reasons.push(reason);
        }
    }

    /// Counts one abusive episode of `role`.
    pub fn record_episode(&mut self, role: &'static str) {
        match self.episodes.iter_mut().find(|(name, _)| *name == role) {
            Some((_, n)) => *n += 1,
            None => self.episodes.push((role, 1)),
        }
    }

    /// Well-behaved latency at `quantile`.
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(quantile))
    }
}

/// The status line for one second.
pub fn status_line(row: &Row, tally: &Tally, open: usize) -> String {
    let mut line = format!(
        "{:>5}s  steady {:.0} lines/s p99 {}",
        row.second,
        row.lines_per_second,
        millis(row.p99)
    );
    let _ = write!(
        line,
        " | abuse {} episodes, {} probes ({} rejected), {} resets | {} open",
        tally.episodes.iter().map(|(_, n)| n).sum::<u64>(),
        tally.probes,
        tally.rejected,
        tally.resets,
        open
    );
    match (row.sample, row.cpu_share) {
        (Some(sample), Some(cpu)) => {
            let _ = write!(
                line,
                " | echod rss {} fds {} cpu {:.0}%",
                mib(sample.rss_bytes),
                sample.descriptors,
                cpu * 100.0
            );
        }
        _ => line.push_str(" | echod not sampled"),
    }
    if row.exhausted {
        line.push_str(" | out of descriptors");
    }
    if tally.corrupt_bytes > 0 || tally.losses > 0 {
        let _ = write!(
            line,
            " | FAILING: {} corrupt bytes, {} losses",
            tally.corrupt_bytes, tally.losses
        );
    }
    line
}

/// Prints the final report on standard output and returns the failed
/// checks (none if the run passed).
pub fn final_report(
    options: &Options,
    tally: &Tally,
    rows: &[Row],
    ends: &Ends,
    exit: Option<&str>,
) -> Vec<String> {
    let mut failures = Vec::new();
    println!(
        "echo-chaos: {}s, {} well-behaved connections at {} lines/s each, {} abusers, churn {} per burst, exhaustion {:.1}s, seed {}",
        options.duration.as_secs_f64(),
        options.conns,
        options.rate,
        options.abusers,
        options.churn,
        options.exhaust.as_secs_f64(),
        options.seed
    );
    println!(
        "well-behaved: {} lines echoed intact; latency p50 {} p99 {} p99.9 {} max {}; {} of {} connections finished cleanly",
        tally.steady_lines,
        millis(tally.quantile(0.5)),
        millis(tally.quantile(0.99)),
        millis(tally.quantile(0.999)),
        millis(Duration::from_micros(tally.latency.max())),
        tally.steady_finished,
        options.conns
    );
    let episodes: Vec<String> = tally
        .episodes
        .iter()
        .map(|(role, n)| format!("{role} {n}"))
        .collect();
    println!(
        "abuse: episodes {}; {} resets; {} churn probes ({} served, {} rejected or cut); {} connects failed",
        episodes.join(", "),
        tally.resets,
        tally.probes,
        tally.probes_served,
        tally.rejected,
        tally.connect_failures
    );
    if tally.waiters_served + tally.waiters_unserved + tally.waiters_rejected > 0 {
        println!(
            "exhaustion: {} waiting connections served ({} before the limit came back), {} rejected at max-connections, {} never; last served {} after descriptors came back",
            tally.waiters_served,
            tally.waiters_early,
            tally.waiters_rejected,
            tally.waiters_unserved,
            tally.recovery.map_or("-".into(), millis)
        );
    }
    let sampled: Vec<&Row> = rows.iter().filter(|row| row.sample.is_some()).collect();
    if let (Some(baseline), false) = (ends.baseline, sampled.is_empty()) {
        let peak_rss = sampled
            .iter()
            .filter_map(|row| row.sample.map(|s| s.rss_bytes))
            .max()
            .unwrap_or(0);
        let peak_fds = sampled
            .iter()
            .filter_map(|row| row.sample.map(|s| s.descriptors))
            .max()
            .unwrap_or(0);
        let cpu: Vec<f64> = sampled.iter().filter_map(|row| row.cpu_share).collect();
        let exhausted: Vec<f64> = sampled
            .iter()
            .filter(|row| row.exhausted)
            .filter_map(|row| row.cpu_share)
            .collect();
        println!(
            "echod rss: baseline {}, peak {}, after {}",
            mib(baseline.rss_bytes),
            mib(peak_rss),
            ends.settled.map_or("-".into(), |s| mib(s.rss_bytes))
        );
        println!(
            "echod descriptors: baseline {}, peak {}, after {}{}",
            baseline.descriptors,
            peak_fds,
            ends.settled
                .map_or("-".into(), |s| s.descriptors.to_string()),
            ends.settle_time.map_or(String::new(), |t| format!(
                " (back to baseline {} after the clients left)",
                millis(t)
            ))
        );
        println!(
            "echod cpu (share of one core, per second): mean {:.0}%, max {:.0}%; while out of descriptors: mean {}",
            100.0 * mean(&cpu),
            100.0 * cpu.iter().copied().fold(0.0, f64::max),
            if exhausted.is_empty() {
                "-".into()
            } else {
                format!("{:.1}%", 100.0 * mean(&exhausted))
            }
        );
        print_spread(&sampled);
        match ends.settled {
            Some(settled) if settled.descriptors > baseline.descriptors => failures.push(format!(
                "descriptors leaked: {} open after the run, {} before",
                settled.descriptors, baseline.descriptors
            )),
            Some(settled)
                if settled.rss_bytes > baseline.rss_bytes + options.rss_slack_bytes as u64 =>
            {
                failures.push(format!(
                    "RSS did not come back: {} after the run, baseline {} (slack {})",
                    mib(settled.rss_bytes),
                    mib(baseline.rss_bytes),
                    mib(options.rss_slack_bytes as u64)
                ))
            }
            Some(_) => {}
            None => failures.push("echod could not be sampled after the run".into()),
        }
    }
    if let Some(exit) = exit {
        println!("echod exit: {exit}");
        if exit != "0" {
            failures.push(format!("echod exited with {exit} after SIGTERM, want 0"));
        }
    }
    if tally.corrupt_bytes > 0 {
        failures.push(format!("{} echoed bytes were corrupt", tally.corrupt_bytes));
    }
    if tally.losses > 0 {
        failures.push(format!(
            "{} connections lost echoes owed to them: {}",
            tally.losses,
            tally.loss_reasons.join("; ")
        ));
    }
    if tally.steady_lines == 0 {
        failures.push("no well-behaved line was echoed".into());
    }
    let p99 = tally.quantile(0.99);
    if p99 > options.p99_limit {
        failures.push(format!(
            "well-behaved p99 latency {} is over the limit of {}",
            millis(p99),
            millis(options.p99_limit)
        ));
    }
    if tally.waiters_unserved > 0 {
        failures.push(format!(
            "{} connections made while out of descriptors were never served",
            tally.waiters_unserved
        ));
    }
    failures
}

/// The per-second samples, summarised: minimum, median and maximum of each
/// column of the status lines.
fn print_spread(rows: &[&Row]) {
    let spread = |mut values: Vec<f64>| -> (f64, f64, f64) {
        values.sort_by(f64::total_cmp);
        match (values.first(), values.last()) {
            (Some(&min), Some(&max)) => (min, values[values.len() / 2], max),
            _ => (0.0, 0.0, 0.0),
        }
    };
    let column = |name: &str, unit: &str, values: Vec<f64>| {
        let (min, median, max) = spread(values);
        println!("  {name:<24} min {min:>9.1}  median {median:>9.1}  max {max:>9.1}  {unit}");
    };
    println!("per-second samples ({}):", rows.len());
    column(
        "well-behaved lines/s",
        "lines/s",
        rows.iter().map(|row| row.lines_per_second).collect(),
    );
    column(
        "well-behaved p99",
        "ms",
        rows.iter()
            .map(|row| row.p99.as_secs_f64() * 1000.0)
            .collect(),
    );
    let samples: Vec<Sample> = rows.iter().filter_map(|row| row.sample).collect();
    column(
        "echod rss",
        "MiB",
        samples
            .iter()
            .map(|s| s.rss_bytes as f64 / (1 << 20) as f64)
            .collect(),
    );
    column(
        "echod descriptors",
        "",
        samples.iter().map(|s| s.descriptors as f64).collect(),
    );
    column(
        "echod cpu",
        "% of a core",
        rows.iter()
            .filter_map(|row| row.cpu_share)
            .map(|share| share * 100.0)
            .collect(),
    );
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// A duration in milliseconds with a unit, to the microsecond.
pub fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// A byte count in MiB with a unit.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
