//! Reading a server process from the outside: CPU time and memory from
//! /proc, system calls from `strace -c`, and user-space instructions from
//! `valgrind --tool=callgrind`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// CPU time (user + system, all threads, living and exited) of `pid`, in
/// nanoseconds, at the kernel's tick resolution.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / clock_ticks()))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `program` can be run here.
pub fn have(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// System calls counted by `strace -c` while attached to a process.
#[derive(Debug, Default, Clone)]
pub struct Syscalls {
    pub total: u64,
    /// read, recvfrom, readv, recvmsg.
    pub reads: u64,
    /// write, sendto, writev, sendmsg.
    pub writes: u64,
    /// epoll_wait / epoll_pwait(2).
    pub waits: u64,
}

/// `strace -c -f` attached to `pid` (all its threads, and any it starts).
pub struct Strace {
    child: Child,
    output: std::path::PathBuf,
}

impl Strace {
    /// Attaches and returns once strace reports the process attached.
    pub fn attach(pid: u32, output: &Path) -> Result<Strace, String> {
        let mut child = Command::new("strace")
            .args(["-c", "-f", "-o"])
            .arg(output)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("strace: {err}"))?;
        let stderr = child.stderr.take().ok_or("strace: no stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "strace did not attach within 10 s".to_string())?;
        Ok(Strace {
            child,
            output: output.to_path_buf(),
        })
    }

    /// Detaches (SIGINT, as Ctrl-C would) and reads the counts.
    pub fn finish(mut self) -> Result<Syscalls, String> {
        signal(self.child.id(), libc::SIGINT);
        wait_deadline(&mut self.child, Duration::from_secs(10))?;
        let table =
            fs::read_to_string(&self.output).map_err(|err| format!("strace output: {err}"))?;
        Ok(parse_strace(&table))
    }
}

/// Parses the table `strace -c` prints:
/// `% time  seconds  usecs/call  calls  [errors]  syscall`, then `total`.
fn parse_strace(table: &str) -> Syscalls {
    let mut counts = Syscalls::default();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].starts_with('%') || fields[0].starts_with('-') {
            continue;
        }
        let (Some(name), Ok(calls)) = (fields.last(), fields[3].parse::<u64>()) else {
            continue;
        };
        match *name {
            "total" => counts.total = calls,
            "read" | "recvfrom" | "readv" | "recvmsg" => counts.reads += calls,
            "write" | "sendto" | "writev" | "sendmsg" => counts.writes += calls,
            "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => counts.waits += calls,
            _ => {}
        }
    }
    counts
}

/// The total instructions (`Ir`) in a callgrind output file.
pub fn callgrind_total(path: &Path) -> Result<u64, String> {
    let text = fs::read_to_string(path).map_err(|err| format!("callgrind output: {err}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no totals in {}", path.display()))
}

pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid at worst
    // gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Waits for `child` to exit; kills it if it has not within `deadline`.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if start.elapsed() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "pid {} did not exit within {deadline:?}",
                    child.id()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strace_table_is_parsed() {
        let table = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 50.00    0.100000           2     50102           recvfrom
 40.00    0.080000           1     50001           sendto
  5.00    0.010000          15       643           epoll_wait
  1.00    0.001000           9       103         3 epoll_ctl
------ ----------- ----------- --------- --------- ----------------
100.00    0.191000           1    100849         3 total
";
        let counts = super::parse_strace(table);
        assert_eq!(
            (counts.reads, counts.writes, counts.waits),
            (50102, 50001, 643)
        );
        assert_eq!(counts.total, 100849);
    }
}
