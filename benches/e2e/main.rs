//! End-to-end comparison: echod against the servers people would otherwise
//! write, under the same load, in one run.
//!
//! For each workload the peers are run in turn, round after round
//! (A B C D, B C D A, ...), so that a noisy machine shifts every peer alike
//! instead of biasing the ratios. Each run starts the server afresh, pinned
//! to CPU 0, and drives it with `echo-bench` pinned to CPU 1 (when the
//! machine has two CPUs and `taskset`). A table per workload gives each
//! peer's median over the rounds and its ratio to echod, and a line under
//! every table gives echod's distance to the floor (the least a readiness
//! server can do, `floor.rs`) and to tokio.
//!
//! Then two loads of their own (`scenarios`): connection churn (cycles per
//! second, server CPU and instructions per cycle, the last also split into
//! a cycle's line and its connection's own life) and the noisy neighbour
//! (small clients alone, then beside a bulk group).
//!
//! Then, in separate shorter runs, the counts that do not drift with the
//! machine's noise: system calls per echoed line (`strace -c -f` attached to
//! the server for a fixed number of lines) and user-space instructions per
//! echoed line (`valgrind --tool=callgrind`, the difference of two fixed
//! line counts, so start-up and shutdown cancel out). Last, memory: RSS per
//! idle connection, never used and after one echo.
//!
//! echo-bench is a package of its own (`tools/echo-bench`); the benchmark
//! builds it first, with its own profile, so it never drives a stale one.
//! Before that it says what it will run and about how long it will take.
//!
//! ```text
//! cargo bench --bench e2e                      # everything (about 20 minutes)
//! cargo bench --bench e2e -- --runs 3 --secs 2 --only pingpong-100
//! cargo bench --bench e2e -- --json results.json   # for benches/chart.py
//! cargo bench --bench e2e -- --test            # each part once, briefly (CI)
//! cargo bench --bench e2e -- --help            # every option, with defaults
//! ```
//!
//! Modules: `plan` (the parts, the command line, the estimate), `peers`
//! and `floor` (the servers compared), `measure` (reading a server from
//! outside), `scenarios` (churn and the noisy neighbour).

mod floor;
mod measure;
mod peers;
mod plan;
mod scenarios;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use echod_kit::process::{self, Signal};
use measure::Strace;
use peers::Peer;
use plan::{Options, Workload};

/// Environment variable that makes this binary serve as a peer.
const PEER_ENV: &str = "ECHOD_BENCH_PEER";

/// Bytes the abusive client tries to push.
const ABUSE_BYTES: usize = 64 << 20;

fn main() {
    if let Ok(name) = std::env::var(PEER_ENV) {
        let peer = Peer::from_name(&name).unwrap_or_else(|| panic!("unknown peer {name}"));
        if let Err(err) = peers::serve(peer) {
            eprintln!("{name}: {err}");
            std::process::exit(1);
        }
        return;
    }
    let options = match plan::parse_args(std::env::args_os().skip(1)) {
        Ok(plan::Command::Run(options)) => options,
        Ok(plan::Command::Help) => {
            print!("{}", plan::usage());
            return;
        }
        Err(err) => {
            eprintln!("e2e: {err}\nTry 'cargo bench --bench e2e -- --help' for more information.");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(&options) {
        eprintln!("e2e: {err}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> Result<(), String> {
    if options.parts().is_empty() {
        // Only a bare NAME gets here (`--only` naming no part is refused):
        // `cargo bench NAME` passes it to every benchmark, and it may be
        // another one's.
        let only = options.only.as_deref().unwrap_or_default();
        let parts: Vec<&str> = plan::part_names().collect();
        eprintln!(
            "e2e: no part matches '{only}', so nothing runs here (the parts are {})",
            parts.join(", ")
        );
        return Ok(());
    }
    // Said first: a plain `cargo bench` lands here, and the whole
    // comparison is about twenty minutes.
    eprint!("{}", options.announcement(Peer::ALL.len()));
    build_echo_bench()?;
    // Up to 10,000 idle clients are held open at once.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let pinning = Pinning::detect();
    let mut out = String::new();
    let _ = writeln!(out, "{}", environment(&pinning));
    print!("{out}");
    let mut json = Vec::new();

    for workload in options.workloads() {
        let rows = compare(options, workload, &pinning)?;
        let table = table(options, workload, &rows);
        print!("{table}");
        json.push(workload_json(workload, &rows));
    }
    if options.selected(plan::CHURN) {
        let (text, rows) = scenarios::churn(options, &pinning)?;
        print!("{text}");
        json.push(rows);
    }
    if options.selected(plan::NOISY) {
        let (text, rows) = scenarios::noisy(options, &pinning)?;
        print!("{text}");
        json.push(rows);
    }
    if options.selected(plan::COUNTS) {
        let counts = counts(options)?;
        print!("{counts}");
    }
    if options.selected(plan::IDLE) {
        let (text, rows) = idle(options)?;
        print!("{text}");
        json.push(rows);
    }
    if let Some(path) = &options.json {
        let body = format!("[{}]\n", json.join(",\n"));
        std::fs::write(path, body).map_err(|err| format!("{}: {err}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// Which CPU the server and the load generator each get.
struct Pinning {
    enabled: bool,
}

impl Pinning {
    fn detect() -> Pinning {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        Pinning {
            enabled: cpus >= 2 && measure::have("taskset", "-V"),
        }
    }

    /// `program` run pinned to `cpu` when pinning is possible.
    fn command(&self, cpu: usize, program: &str) -> Command {
        if self.enabled {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string(), program]);
            command
        } else {
            Command::new(program)
        }
    }
}

fn environment(pinning: &Pinning) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "# echod end-to-end comparison\n\nkernel {}, {cpus} x {model}; {}\n",
        kernel.trim(),
        if pinning.enabled {
            "server pinned to CPU 0, echo-bench to CPU 1"
        } else {
            "no CPU pinning (needs 2 CPUs and taskset)"
        }
    )
}

/// A server process under test.
struct Server {
    child: Child,
    addr: SocketAddr,
}

/// How to start a server.
enum Wrap<'a> {
    Pinned(&'a Pinning),
    Callgrind(&'a std::path::Path),
}

impl Server {
    fn start(peer: Peer, wrap: Wrap) -> Result<Server, String> {
        let (program, args): (String, Vec<&str>) = match peer {
            // Warnings only: the peers log nothing, and echod's two info
            // lines per connection would put the log relay's system calls
            // into the counts. Its address is then read from /proc.
            Peer::Echod => (
                env!("CARGO_BIN_EXE_echod").into(),
                vec!["-l", "127.0.0.1:0", "--log-level", "warn"],
            ),
            _ => (
                std::env::current_exe()
                    .map_err(|err| err.to_string())?
                    .to_string_lossy()
                    .into_owned(),
                vec![],
            ),
        };
        let mut command = match wrap {
            Wrap::Pinned(pinning) => pinning.command(0, &program),
            Wrap::Callgrind(out) => {
                let mut command = Command::new("valgrind");
                command
                    .args(["--tool=callgrind", "-q"])
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(&program);
                command
            }
        };
        command
            .args(args)
            .env(PEER_ENV, peer.name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if peer == Peer::Echod {
            command.env_remove(PEER_ENV);
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("start {}: {err}", peer.name()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the address, then drains the log for the server's lifetime so
        // that it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = if peer == Peer::Echod {
            measure::listening_addr(child.id(), Duration::from_secs(60))
        } else {
            rx.recv_timeout(Duration::from_secs(60)).ok()
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            return Err(format!("{} did not start listening", peer.name()));
        };
        let addr = addr
            .parse()
            .map_err(|_| format!("{}: bad address {addr}", peer.name()))?;
        Ok(Server { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (echod delivers what it owes and exits; the peers
    /// die at once).
    fn stop(mut self) -> Result<(), String> {
        // A failure here shows up as the server not exiting, below.
        let _ = process::signal(self.pid(), Signal::TERM);
        measure::wait_deadline(&mut self.child, Duration::from_secs(60))
    }
}

/// What one echo-bench run reported, and what the server cost meanwhile.
#[derive(Debug, Clone, Default)]
struct Sample {
    lines_per_s: f64,
    p50_ns: f64,
    p99_ns: f64,
    p999_ns: f64,
    max_ns: f64,
    /// Server CPU time per echoed line, user + system.
    cpu_ns_per_line: f64,
    peak_rss: f64,
}

/// Where echo-bench is built: beside the echod that cargo built for this
/// benchmark, in the same profile's directory (`target/release`).
fn echo_bench_program() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_echod")).with_file_name("echo-bench")
}

/// Builds echo-bench with the profile this benchmark was built with, into
/// the same target directory, so that the runs never use a stale or
/// missing load generator. Cargo gives a bench the paths of its own
/// package's binaries only, and echo-bench is a package of its own
/// (`tools/echo-bench`); when it is up to date this costs a second.
fn build_echo_bench() -> Result<(), String> {
    let program = echo_bench_program();
    let profile_dir = program.parent().ok_or("echod has no directory")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("echod has no target directory")?;
    // The directory is named for the profile, except the dev profile's.
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(profile) => profile,
        None => return Err(format!("no profile in {}", profile_dir.display())),
    };
    // `cargo bench` says which cargo runs it; run by hand, take the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--package",
            "echo-bench",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|err| format!("run {}: {err}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!(
            "building echo-bench failed ({status}); try `cargo build --release -p echo-bench`"
        ));
    }
    if !program.exists() {
        return Err(format!(
            "{} is missing after building echo-bench",
            program.display()
        ));
    }
    Ok(())
}

/// Runs echo-bench, returns its JSON line. Fails on any counted error.
fn echo_bench(pinning: &Pinning, addr: SocketAddr, args: &[String]) -> Result<String, String> {
    let mut command = pinning.command(1, &echo_bench_program().to_string_lossy());
    command
        .args(["-a", &addr.to_string(), "--json", "-q"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let output = command
        .output()
        .map_err(|err| format!("run echo-bench: {err}"))?;
    let json = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("echo-bench failed ({}): {json}", output.status));
    }
    Ok(json)
}

/// CPU time of `pid` so far, in nanoseconds; 0 once it has gone.
fn cpu_ns(pid: u32) -> u64 {
    process::cpu_time(pid).map_or(0, |cpu| cpu.as_nanos() as u64)
}

/// The number after `"key":` in a JSON line.
fn json_number(json: &str, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    json.find(&needle)
        .map(|at| &json[at + needle.len()..])
        .and_then(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or(f64::NAN)
}

/// One timed run of `workload` against a fresh `peer` server.
fn sample(
    options: &Options,
    workload: &Workload,
    peer: Peer,
    pinning: &Pinning,
) -> Result<Sample, String> {
    let server = Server::start(peer, Wrap::Pinned(pinning))?;
    let pid = server.pid();
    let stop_abuse = Arc::new(AtomicBool::new(false));
    let abuser = workload
        .abuser
        .then(|| abuse(server.addr, Arc::clone(&stop_abuse)));
    let cpu_before = cpu_ns(pid);
    let args = [
        format!("--conns={}", workload.conns),
        format!("--pipeline={}", workload.pipeline),
        format!("--line-bytes={}", workload.line_bytes),
        format!("--duration={}", options.secs),
        format!("--warmup={}", options.warmup),
    ];
    let result = echo_bench(pinning, server.addr, &args);
    let cpu = cpu_ns(pid).saturating_sub(cpu_before);
    let peak_rss = process::status_bytes(pid, "VmHWM").unwrap_or(0);
    stop_abuse.store(true, Ordering::Relaxed);
    if let Some(abuser) = abuser {
        let _ = abuser.join();
    }
    server.stop()?;
    let json = result?;
    // The server's CPU time covers the whole run, warm-up and drain included.
    let lines = json_number(&json, "lines_all_phases");
    Ok(Sample {
        lines_per_s: json_number(&json, "lines_per_s"),
        p50_ns: json_number(&json, "p50"),
        p99_ns: json_number(&json, "p99"),
        p999_ns: json_number(&json, "p99_9"),
        max_ns: json_number(&json, "max"),
        cpu_ns_per_line: cpu as f64 / lines.max(1.0),
        peak_rss: peak_rss as f64,
    })
}

/// A client that writes lines as fast as it can and never reads, until
/// `stop` or 64 MiB.
fn abuse(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return 0;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let line = [b"x".repeat(62), b"\r\n".to_vec()].concat();
        let chunk = line.repeat(1024);
        let mut pushed = 0;
        while pushed < ABUSE_BYTES && !stop.load(Ordering::Relaxed) {
            match stream.write(&chunk) {
                Ok(n) => pushed += n,
                // Timed out: the server stopped reading (or was never fast
                // enough); keep trying until told to stop.
                Err(_) => continue,
            }
        }
        // Hold the connection, unread, until the measurement ends.
        while !stop.load(Ordering::Relaxed) {
            let _ = stream.write(&chunk[..1]);
        }
        pushed
    })
}

/// The peers' rows of one workload: every run, round by round.
fn compare(
    options: &Options,
    workload: &Workload,
    pinning: &Pinning,
) -> Result<Vec<(Peer, Vec<Sample>)>, String> {
    let mut rows: Vec<(Peer, Vec<Sample>)> = Peer::ALL.iter().map(|&p| (p, Vec::new())).collect();
    for round in 0..options.runs {
        for i in 0..rows.len() {
            let index = (i + round) % rows.len();
            let peer = rows[index].0;
            let sample = sample(options, workload, peer, pinning)
                .map_err(|err| format!("{} / {}: {err}", workload.name, peer.name()))?;
            eprintln!(
                "{} round {}/{} {:>14}: {:>12.0} lines/s",
                workload.name,
                round + 1,
                options.runs,
                peer.name(),
                sample.lines_per_s
            );
            rows[index].1.push(sample);
        }
    }
    Ok(rows)
}

fn median(samples: &[Sample], field: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(field).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn table(options: &Options, workload: &Workload, rows: &[(Peer, Vec<Sample>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## {}: {}\n\nmedian of {} interleaved runs of {} s each, after {} s of warm-up\n",
        workload.name, workload.title, options.runs, options.secs, options.warmup
    );
    let _ = writeln!(
        out,
        "| peer | lines/s | vs echod | p50 | p99 | p99.9 | server CPU/line | vs echod | peak RSS |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = &rows[0].1;
    let base_rate = median(base, |s| s.lines_per_s);
    let base_cpu = median(base, |s| s.cpu_ns_per_line);
    for (peer, samples) in rows {
        let rate = median(samples, |s| s.lines_per_s);
        let cpu = median(samples, |s| s.cpu_ns_per_line);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {:.2} | {} |",
            peer.name(),
            thousands(rate),
            rate / base_rate,
            duration(median(samples, |s| s.p50_ns)),
            duration(median(samples, |s| s.p99_ns)),
            duration(median(samples, |s| s.p999_ns)),
            duration(cpu),
            cpu / base_cpu,
            mib(median(samples, |s| s.peak_rss)),
        );
    }
    let figures: Vec<(Peer, Vec<f64>)> = rows
        .iter()
        .map(|(peer, samples)| {
            let rate = median(samples, |s| s.lines_per_s);
            (*peer, vec![rate, median(samples, |s| s.cpu_ns_per_line)])
        })
        .collect();
    out.push_str(&distances(&["lines/s", "CPU/line"], &figures));
    out
}

/// The line under a table that says how far echod is from the floor and
/// from tokio: for each named column, echod's figure divided by the
/// reference's. Above 1, echod has more of it: better for lines/s, worse for
/// a cost.
fn distances(columns: &[&str], figures: &[(Peer, Vec<f64>)]) -> String {
    let find = |peer: Peer| figures.iter().find(|(p, _)| *p == peer).map(|(_, f)| f);
    let Some(echod) = find(Peer::Echod) else {
        return String::new();
    };
    let parts: Vec<String> = Peer::REFERENCES
        .into_iter()
        .filter_map(|reference| {
            let theirs = find(reference)?;
            let ratios: Vec<String> = columns
                .iter()
                .zip(echod.iter().zip(theirs))
                .map(|(column, (ours, theirs))| {
                    let ratio = ours / theirs;
                    if ratio.is_finite() {
                        format!("{column} {ratio:.2}")
                    } else {
                        format!("{column} -")
                    }
                })
                .collect();
            Some(format!(
                "echod ÷ {}: {}",
                reference.name(),
                ratios.join(", ")
            ))
        })
        .collect();
    format!("\n{}\n", parts.join("; "))
}

fn workload_json(workload: &Workload, rows: &[(Peer, Vec<Sample>)]) -> String {
    let peers: Vec<String> = rows
        .iter()
        .map(|(peer, samples)| {
            format!(
                "{{\"peer\":\"{}\",\"lines_per_s\":{:.1},\"p50_ns\":{:.0},\"p99_ns\":{:.0},\"p999_ns\":{:.0},\"max_ns\":{:.0},\"cpu_ns_per_line\":{:.1},\"peak_rss\":{:.0},\"runs\":[{}]}}",
                peer.name(),
                median(samples, |s| s.lines_per_s),
                median(samples, |s| s.p50_ns),
                median(samples, |s| s.p99_ns),
                median(samples, |s| s.p999_ns),
                median(samples, |s| s.max_ns),
                median(samples, |s| s.cpu_ns_per_line),
                median(samples, |s| s.peak_rss),
                samples
                    .iter()
                    .map(|s| format!("{:.1}", s.lines_per_s))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    format!(
        "{{\"workload\":\"{}\",\"conns\":{},\"pipeline\":{},\"line_bytes\":{},\"peers\":[{}]}}",
        workload.name,
        workload.conns,
        workload.pipeline,
        workload.line_bytes,
        peers.join(",")
    )
}

/// System calls and instructions per echoed line, from fixed line counts.
fn counts(options: &Options) -> Result<String, String> {
    let mut out = String::new();
    let shape = options.counts_shape();
    let (conns, per_conn) = (shape.conns, shape.lines_per_conn);
    let _ = writeln!(out, "\n{}\n", plan::counts_heading(shape));
    let have_strace = measure::have("strace", "-V");
    let have_valgrind = measure::have("valgrind", "--version");
    let no_pin = Pinning { enabled: false };
    let dir = std::env::temp_dir().join(format!("echod-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let _ = writeln!(
        out,
        "syscalls: `strace -c -f -p PID` attached for {} lines ({conns} connections x {per_conn}); \
         instructions: `valgrind --tool=callgrind`, (Ir(N2) - Ir(N1)) / (N2 - N1) lines\n",
        conns * per_conn
    );
    let _ = writeln!(
        out,
        "| peer | syscalls/line | read+write/line | epoll_wait/line | user instructions/line |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for peer in Peer::ALL {
        let lines = (conns * per_conn) as f64;
        let syscalls = if have_strace {
            let server = Server::start(peer, Wrap::Pinned(&no_pin))?;
            let strace =
                Strace::attach(server.pid(), &dir.join(format!("{}.strace", peer.name())))?;
            let args = [
                format!("--conns={conns}"),
                format!("--lines-per-conn={per_conn}"),
            ];
            let result = echo_bench(&no_pin, server.addr, &args);
            let counts = strace.finish();
            server.stop()?;
            result?;
            let c = counts?;
            Some((
                c.total as f64 / lines,
                (c.reads + c.writes) as f64 / lines,
                c.waits as f64 / lines,
            ))
        } else {
            None
        };
        let instructions = if have_valgrind {
            let (n1, n2) = shape.callgrind_lines;
            let mut totals = Vec::new();
            for n in [n1, n2] {
                let file = dir.join(format!("{}-{n}.callgrind", peer.name()));
                let server = Server::start(peer, Wrap::Callgrind(&file))?;
                let args = [
                    format!("--conns={conns}"),
                    format!("--lines-per-conn={n}"),
                    "--timeout=120".to_string(),
                ];
                let result = echo_bench(&no_pin, server.addr, &args);
                server.stop()?;
                result?;
                totals.push(measure::callgrind_total(&file)?);
            }
            Some((totals[1] as f64 - totals[0] as f64) / ((n2 - n1) * conns) as f64)
        } else {
            None
        };
        let (t, rw) = syscalls.map_or((f64::NAN, f64::NAN), |(t, rw, _)| (t, rw));
        figures.push((peer, vec![t, rw, instructions.unwrap_or(f64::NAN)]));
        let (total, rw, waits) = match syscalls {
            Some((t, rw, w)) => (format!("{t:.3}"), format!("{rw:.3}"), format!("{w:.3}")),
            None => ("strace not found".into(), "-".into(), "-".into()),
        };
        let instructions = instructions.map_or("valgrind not found".into(), |i| format!("{i:.0}"));
        let _ = writeln!(
            out,
            "| {} | {total} | {rw} | {waits} | {instructions} |",
            peer.name()
        );
        eprintln!("counts {}: done", peer.name());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let columns = ["syscalls/line", "read+write/line", "instructions/line"];
    out.push_str(&distances(&columns, &figures));
    Ok(out)
}

/// RSS per idle connection: never used, then after echoing one line each.
fn idle(options: &Options) -> Result<(String, String), String> {
    let n = options.idle_conns;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## idle-{n}: {} idle connections (memory)\n\nserver RSS growth (VmRSS) divided by the connections\n",
        thousands(n as f64)
    );
    let _ = writeln!(
        out,
        "| peer | per connection, never used | after one echo each | vs echod |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let mut rows = Vec::new();
    let no_pin = Pinning { enabled: false };
    for peer in Peer::ALL {
        let server = Server::start(peer, Wrap::Pinned(&no_pin))?;
        let pid = server.pid();
        let base = process::rss_bytes(pid).unwrap_or(0) as f64;
        let result = hold_idle(server.addr, n, pid);
        server.stop()?;
        let (never, echoed) = result.map_err(|err| format!("idle / {}: {err}", peer.name()))?;
        rows.push((peer, (never - base) / n as f64, (echoed - base) / n as f64));
    }
    let base = rows[0].2;
    for (peer, never, echoed) in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} B | {:.0} B | {:.1} |",
            peer.name(),
            never,
            echoed,
            echoed / base
        );
    }
    let figures: Vec<(Peer, Vec<f64>)> = rows
        .iter()
        .map(|(peer, never, echoed)| (*peer, vec![*never, *echoed]))
        .collect();
    out.push_str(&distances(&["never used", "after one echo"], &figures));
    let json = format!(
        "{{\"workload\":\"idle-{n}\",\"conns\":{n},\"peers\":[{}]}}",
        rows.iter()
            .map(|(p, never, echoed)| format!(
                "{{\"peer\":\"{}\",\"rss_per_conn_never_used\":{never:.1},\"rss_per_conn_after_echo\":{echoed:.1}}}",
                p.name()
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok((out, json))
}

/// Opens `n` connections, reads the server's RSS, echoes a line on each,
/// reads it again. Returns both readings.
fn hold_idle(addr: SocketAddr, n: usize, pid: u32) -> Result<(f64, f64), String> {
    let timeout = Duration::from_secs(10);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|err| err.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|err| err.to_string())?;
        conns.push(stream);
    }
    // The server accepts in order: once a later connection is served, all of
    // these have been accepted.
    round_trip(&mut TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?)?;
    let never = process::rss_bytes(pid).unwrap_or(0) as f64;
    for stream in &mut conns {
        stream
            .write_all(b"hello, idle world\r\n")
            .map_err(|err| err.to_string())?;
    }
    for stream in &mut conns {
        let mut echo = [0; 19];
        stream
            .read_exact(&mut echo)
            .map_err(|err| err.to_string())?;
        if &echo != b"hello, idle world\r\n" {
            return Err("wrong echo".into());
        }
    }
    let echoed = process::rss_bytes(pid).unwrap_or(0) as f64;
    Ok((never, echoed))
}

fn round_trip(stream: &mut TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"ping\r\n").map_err(|e| e.to_string())?;
    let mut echo = [0; 6];
    stream.read_exact(&mut echo).map_err(|e| e.to_string())?;
    Ok(())
}

fn thousands(n: f64) -> String {
    if !n.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}
