//! The two loads that are not long-lived connections at a steady pace:
//! connection churn and the noisy neighbour. Each runs every peer in turn,
//! round after round (A B C D, B C D A, ...), a fresh server for every run,
//! pinned as the workloads are, and its table gives the medians.
//!
//! - **churn**: `echo-bench --churn 1`, a few cycles in flight, each a
//!   connection that echoes one 64 B line and closes, as a balancer's
//!   health checks do. Cycles per second, latencies, the server's CPU per
//!   cycle (its CPU time over the run divided by the cycles of every
//!   phase), echo-bench's own CPU per cycle (to tell which side is the
//!   limit), and user-space instructions per cycle under callgrind, from
//!   two fixed cycle counts so that start-up and shutdown cancel out.
//! - **noisy**: small ping-pong clients alone, then the same beside a bulk
//!   group (`echo-bench --bulk-conns`) at nice 19, each pair run in the
//!   same round in alternating order. The small clients' throughput kept
//!   and p99 grown are the median of each round's own ratio; the bulk
//!   group's MB/s is what it received back.
//!
//! Not here: starting servers and running echo-bench (`main.rs`), the
//! shapes and the command line (`plan.rs`).

use std::fmt::Write as _;

use crate::measure;
use crate::peers::Peer;
use crate::plan::{ChurnShape, NoisyShape, Options};
use crate::{Pinning, Server, Wrap, cpu_ns, distances, duration, echo_bench, json_number};

/// One timed churn run.
#[derive(Debug, Clone, Copy)]
struct ChurnSample {
    cycles_per_s: f64,
    connect_p99_ns: f64,
    cycle_p50_ns: f64,
    cycle_p99_ns: f64,
    server_cpu_ns_per_cycle: f64,
    client_cpu_ns_per_cycle: f64,
}

/// One timed run of the small clients, alone or beside the bulk group.
#[derive(Debug, Clone, Copy)]
struct NoisySample {
    small_lines_per_s: f64,
    small_p99_ns: f64,
    /// What the bulk group received back, bytes per second; 0 alone.
    bulk_bytes_per_s: f64,
}

/// A round's pair of noisy runs: the small clients alone, and beside bulk.
#[derive(Debug, Clone, Copy)]
struct NoisyPair {
    alone: NoisySample,
    beside: NoisySample,
}

impl NoisyPair {
    /// The share of their throughput alone the small clients kept.
    fn kept(&self) -> f64 {
        self.beside.small_lines_per_s / self.alone.small_lines_per_s
    }

    /// How many times their p99 alone the small clients' p99 became.
    fn p99_growth(&self) -> f64 {
        self.beside.small_p99_ns / self.alone.small_p99_ns
    }
}

/// The median of `field` over `items`.
fn median<T>(items: &[T], field: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = items.iter().map(field).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The JSON object after `"key":` in a JSON line, braces included; empty
/// if there is none.
fn json_object<'a>(json: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\":{{");
    let Some(at) = json.find(&needle) else {
        return "";
    };
    let start = at + needle.len() - 1;
    let mut depth = 0;
    for (i, c) in json[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return &json[start..=start + i];
        }
    }
    ""
}

/// Runs `sample` for every peer, round after round, each round starting
/// one peer later, and returns each peer's samples.
fn interleaved<S>(
    options: &Options,
    part: &str,
    mut sample: impl FnMut(Peer, usize) -> Result<S, String>,
    progress: impl Fn(&S) -> String,
) -> Result<Vec<(Peer, Vec<S>)>, String> {
    let mut rows: Vec<(Peer, Vec<S>)> = Peer::ALL.iter().map(|&p| (p, Vec::new())).collect();
    for round in 0..options.runs {
        for i in 0..rows.len() {
            let index = (i + round) % rows.len();
            let peer = rows[index].0;
            let s =
                sample(peer, round).map_err(|err| format!("{part} / {}: {err}", peer.name()))?;
            eprintln!(
                "{part} round {}/{} {:>14}: {}",
                round + 1,
                options.runs,
                peer.name(),
                progress(&s)
            );
            rows[index].1.push(s);
        }
    }
    Ok(rows)
}

/// The churn part: its Markdown table and its JSON.
pub fn churn(options: &Options, pinning: &Pinning) -> Result<(String, String), String> {
    let shape = options.churn_shape();
    let rows = interleaved(
        options,
        "churn",
        |peer, _| churn_sample(options, shape, peer, pinning),
        |s| format!("{:>9.0} cycles/s", s.cycles_per_s),
    )?;
    let counted = options.counts && measure::have("valgrind", "--version");
    // Three times each: as the table's runs are shaped; with one cycle in
    // flight; and with one in flight echoing two lines. The first moves by a
    // few per cent from run to run, with how many cycles happen to share a
    // turn of the server's loop; the others are always a turn per event,
    // the same to the instruction every run, so that two builds can be told
    // apart by them. The third less the second is what one more line costs
    // a connection, so the second splits into its line and the rest: the
    // connection's own life (connect, accept, FIN, close).
    let mut instructions = Vec::new();
    for (peer, _) in &rows {
        let figures = if counted {
            let shaped = churn_instructions(*peer, shape, 1)?;
            let single = ChurnShape { conns: 1, ..shape };
            let one_line = churn_instructions(*peer, single, 1)?;
            let two_lines = churn_instructions(*peer, single, 2)?;
            let split = CycleSplit::of(one_line, two_lines);
            eprintln!(
                "churn instructions {}: {shaped:.0} per cycle, {one_line:.0} with one in flight \
                 (its line {:.0}, the connection {:.0})",
                peer.name(),
                split.line,
                split.connection
            );
            (shaped, split)
        } else {
            (f64::NAN, CycleSplit::of(f64::NAN, f64::NAN))
        };
        instructions.push(figures);
    }

    let mut out = String::new();
    let (n1, n2) = shape.callgrind_cycles;
    let _ = writeln!(
        out,
        "\n## churn: {} cycles in flight, each a connection that echoes one {} B line and closes\n\n\
         median of {} interleaved runs of {} s each, after {} s of warm-up; server and client CPU \
         over the whole run divided by its cycles; instructions: `valgrind --tool=callgrind`, \
         (Ir({n2}) - Ir({n1})) / {} cycles, as shaped and with 1 cycle in flight; with 1 in flight, \
         split into its line (a cycle of 2 lines less a cycle of 1) and the connection (the rest: \
         connect, accept, FIN and close)\n",
        shape.conns,
        shape.line_bytes,
        options.runs,
        options.secs,
        options.warmup,
        n2 - n1
    );
    let _ = writeln!(
        out,
        "| peer | cycles/s | vs echod | connect p99 | cycle p50 | cycle p99 | server CPU/cycle | vs echod | echo-bench CPU/cycle | user instructions/cycle | same, 1 in flight | its line | the connection |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let base_rate = median(&rows[0].1, |s| s.cycles_per_s);
    let base_cpu = median(&rows[0].1, |s| s.server_cpu_ns_per_cycle);
    let mut figures = Vec::new();
    let mut json = Vec::new();
    let text = |n: f64| {
        if n.is_finite() {
            format!("{n:.0}")
        } else {
            "-".to_string()
        }
    };
    let json_number = |n: f64| {
        if n.is_finite() {
            format!("{n:.0}")
        } else {
            "null".to_string()
        }
    };
    for ((peer, samples), &(instr, split)) in rows.iter().zip(&instructions) {
        let rate = median(samples, |s| s.cycles_per_s);
        let cpu = median(samples, |s| s.server_cpu_ns_per_cycle);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
            peer.name(),
            crate::thousands(rate),
            rate / base_rate,
            duration(median(samples, |s| s.connect_p99_ns)),
            duration(median(samples, |s| s.cycle_p50_ns)),
            duration(median(samples, |s| s.cycle_p99_ns)),
            duration(cpu),
            cpu / base_cpu,
            duration(median(samples, |s| s.client_cpu_ns_per_cycle)),
            text(instr),
            text(split.cycle),
            text(split.line),
            text(split.connection),
        );
        figures.push((
            *peer,
            vec![rate, cpu, instr, split.cycle, split.line, split.connection],
        ));
        json.push(format!(
            "{{\"peer\":\"{}\",\"cycles_per_s\":{rate:.1},\"cycle_p99_ns\":{:.0},\"server_cpu_ns_per_cycle\":{cpu:.1},\"client_cpu_ns_per_cycle\":{:.1},\"instructions_per_cycle\":{},\"instructions_per_cycle_one_in_flight\":{},\"instructions_per_line_one_in_flight\":{},\"instructions_per_connection_one_in_flight\":{},\"runs\":[{}]}}",
            peer.name(),
            median(samples, |s| s.cycle_p99_ns),
            median(samples, |s| s.client_cpu_ns_per_cycle),
            json_number(instr),
            json_number(split.cycle),
            json_number(split.line),
            json_number(split.connection),
            samples
                .iter()
                .map(|s| format!("{:.1}", s.cycles_per_s))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    out.push_str(&distances(
        &[
            "cycles/s",
            "CPU/cycle",
            "instructions/cycle",
            "instructions/cycle with 1 in flight",
            "its line",
            "the connection",
        ],
        &figures,
    ));
    let json = format!(
        "{{\"workload\":\"churn\",\"conns\":{},\"line_bytes\":{},\"peers\":[{}]}}",
        shape.conns,
        shape.line_bytes,
        json.join(",")
    );
    Ok((out, json))
}

fn churn_sample(
    options: &Options,
    shape: ChurnShape,
    peer: Peer,
    pinning: &Pinning,
) -> Result<ChurnSample, String> {
    let server = Server::start(peer, Wrap::Pinned(pinning))?;
    let pid = server.pid();
    let cpu_before = cpu_ns(pid);
    let args = [
        "--churn=1".to_string(),
        format!("--conns={}", shape.conns),
        format!("--line-bytes={}", shape.line_bytes),
        format!("--duration={}", options.secs),
        format!("--warmup={}", options.warmup),
    ];
    let result = echo_bench(pinning, server.addr, &args);
    let cpu = cpu_ns(pid).saturating_sub(cpu_before);
    server.stop()?;
    let json = result?;
    let cycles = json_number(&json, "cycles_all_phases").max(1.0);
    let connect = json_object(&json, "connect_latency_ns");
    let cycle = json_object(&json, "cycle_latency_ns");
    Ok(ChurnSample {
        cycles_per_s: json_number(&json, "cycles_per_s"),
        connect_p99_ns: json_number(connect, "p99"),
        cycle_p50_ns: json_number(cycle, "p50"),
        cycle_p99_ns: json_number(cycle, "p99"),
        server_cpu_ns_per_cycle: cpu as f64 / cycles,
        client_cpu_ns_per_cycle: json_number(&json, "client_cpu_s") * 1e9 / cycles,
    })
}

/// A churn cycle's user-space instructions, split into its line and the
/// rest, from cycles of one line and of two.
#[derive(Clone, Copy)]
struct CycleSplit {
    /// A cycle of one line.
    cycle: f64,
    /// What the second line adds to a cycle.
    line: f64,
    /// The cycle less its line: connect, accept, the FIN and the close.
    connection: f64,
}

impl CycleSplit {
    fn of(one_line: f64, two_lines: f64) -> CycleSplit {
        let line = two_lines - one_line;
        CycleSplit {
            cycle: one_line,
            line,
            connection: one_line - line,
        }
    }
}

/// User-space instructions per churn cycle of `peer`, each cycle echoing
/// `lines` lines, under callgrind.
fn churn_instructions(peer: Peer, shape: ChurnShape, lines: usize) -> Result<f64, String> {
    let no_pin = Pinning { enabled: false };
    let dir = std::env::temp_dir().join(format!("echod-e2e-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let (n1, n2) = shape.callgrind_cycles;
    let mut totals = Vec::new();
    for n in [n1, n2] {
        let file = dir.join(format!("{}-{n}.callgrind", peer.name()));
        let server = Server::start(peer, Wrap::Callgrind(&file))?;
        let args = [
            format!("--churn={lines}"),
            format!("--conns={}", shape.conns),
            format!("--line-bytes={}", shape.line_bytes),
            format!("--cycles={n}"),
            "--timeout=120".to_string(),
        ];
        let result = echo_bench(&no_pin, server.addr, &args);
        server.stop()?;
        result.map_err(|err| format!("churn under callgrind / {}: {err}", peer.name()))?;
        totals.push(measure::callgrind_total(&file)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((totals[1] as f64 - totals[0] as f64) / (n2 - n1) as f64)
}

/// The noisy-neighbour part: its Markdown table and its JSON.
pub fn noisy(options: &Options, pinning: &Pinning) -> Result<(String, String), String> {
    let shape = options.noisy_shape();
    let rows = interleaved(
        options,
        "noisy",
        |peer, round| {
            // Alternate which of the pair runs first, so that neither is
            // always the one run on a machine just warmed up.
            let (first, second) = if round % 2 == 0 {
                (false, true)
            } else {
                (true, false)
            };
            let a = noisy_sample(options, shape, peer, pinning, first)?;
            let b = noisy_sample(options, shape, peer, pinning, second)?;
            let (alone, beside) = if first { (b, a) } else { (a, b) };
            Ok(NoisyPair { alone, beside })
        },
        |p| {
            format!(
                "kept {:.0}% of {:.0} lines/s, p99 x{:.2}, bulk {:.0} MB/s",
                p.kept() * 100.0,
                p.alone.small_lines_per_s,
                p.p99_growth(),
                p.beside.bulk_bytes_per_s / 1e6
            )
        },
    )?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## noisy: {} ping-pong clients of {} B, alone and beside {} bulk connections of {} lines of {} KiB in flight (nice {})\n\n\
         median of {} interleaved rounds of {} s each, after {} s of warm-up; kept and p99 growth \
         are the median of each round's own ratio\n",
        shape.small_conns,
        shape.small_line_bytes,
        shape.bulk_conns,
        shape.bulk_pipeline,
        shape.bulk_line_bytes / 1024,
        shape.bulk_nice,
        options.runs,
        options.secs,
        options.warmup
    );
    let _ = writeln!(
        out,
        "| peer | small lines/s alone | beside bulk | kept | p99 alone | p99 beside bulk | p99 growth | bulk MB/s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut json = Vec::new();
    let mut summary = Vec::new();
    for (peer, pairs) in &rows {
        let kept = median(pairs, NoisyPair::kept);
        let growth = median(pairs, NoisyPair::p99_growth);
        let bulk = median(pairs, |p| p.beside.bulk_bytes_per_s);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0}% | {} | {} | {:.2} | {:.0} |",
            peer.name(),
            crate::thousands(median(pairs, |p| p.alone.small_lines_per_s)),
            crate::thousands(median(pairs, |p| p.beside.small_lines_per_s)),
            kept * 100.0,
            duration(median(pairs, |p| p.alone.small_p99_ns)),
            duration(median(pairs, |p| p.beside.small_p99_ns)),
            growth,
            bulk / 1e6
        );
        summary.push((*peer, kept, growth));
        json.push(format!(
            "{{\"peer\":\"{}\",\"small_lines_per_s_alone\":{:.1},\"small_lines_per_s_beside_bulk\":{:.1},\"kept\":{kept:.4},\"p99_alone_ns\":{:.0},\"p99_beside_bulk_ns\":{:.0},\"p99_growth\":{growth:.3},\"bulk_bytes_per_s\":{bulk:.0}}}",
            peer.name(),
            median(pairs, |p| p.alone.small_lines_per_s),
            median(pairs, |p| p.beside.small_lines_per_s),
            median(pairs, |p| p.alone.small_p99_ns),
            median(pairs, |p| p.beside.small_p99_ns),
        ));
    }
    out.push_str(&noisy_verdict(&summary));
    let json = format!(
        "{{\"workload\":\"noisy\",\"small_conns\":{},\"bulk_conns\":{},\"peers\":[{}]}}",
        shape.small_conns,
        shape.bulk_conns,
        json.join(",")
    );
    Ok((out, json))
}

/// The line under the noisy table: echod against its targets (at least 90%
/// kept, p99 within 2x) and against every peer.
fn noisy_verdict(summary: &[(Peer, f64, f64)]) -> String {
    let Some(&(_, kept, growth)) = summary.iter().find(|(p, _, _)| *p == Peer::Echod) else {
        return String::new();
    };
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let best_kept = summary
        .iter()
        .all(|&(p, k, _)| p == Peer::Echod || kept >= k);
    let best_growth = summary
        .iter()
        .all(|&(p, _, g)| p == Peer::Echod || growth <= g);
    format!(
        "\nechod: kept {:.0}% (target at least 90%: {}), p99 x{growth:.2} (target at most 2: {}); \
         as good as every peer on throughput kept: {}, on p99 growth: {}\n",
        kept * 100.0,
        met(kept >= 0.9),
        met(growth <= 2.0),
        if best_kept { "yes" } else { "no" },
        if best_growth { "yes" } else { "no" },
    )
}

fn noisy_sample(
    options: &Options,
    shape: NoisyShape,
    peer: Peer,
    pinning: &Pinning,
    beside_bulk: bool,
) -> Result<NoisySample, String> {
    let server = Server::start(peer, Wrap::Pinned(pinning))?;
    let mut args = vec![
        format!("--conns={}", shape.small_conns),
        format!("--line-bytes={}", shape.small_line_bytes),
        format!("--duration={}", options.secs),
        format!("--warmup={}", options.warmup),
    ];
    if beside_bulk {
        args.extend([
            format!("--bulk-conns={}", shape.bulk_conns),
            format!("--bulk-line-bytes={}", shape.bulk_line_bytes),
            format!("--bulk-pipeline={}", shape.bulk_pipeline),
            format!("--bulk-nice={}", shape.bulk_nice),
        ]);
    }
    let result = echo_bench(pinning, server.addr, &args);
    server.stop()?;
    let json = result?;
    let bulk = json_object(&json, "bulk");
    Ok(NoisySample {
        small_lines_per_s: json_number(&json, "lines_per_s"),
        small_p99_ns: json_number(&json, "p99"),
        bulk_bytes_per_s: if bulk.is_empty() {
            0.0
        } else {
            json_number(bulk, "received_bytes_per_s")
        },
    })
}
