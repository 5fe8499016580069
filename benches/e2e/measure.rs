//! Reading a server process from the outside, beyond what `echod-kit`'s
//! `process` module reads (CPU time, memory, signals): the address it
//! listens on from /proc, system calls from `strace -c`, and user-space
//! instructions from `valgrind --tool=callgrind`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use echod_kit::process::{self, Signal};

/// The IPv4 address `pid` listens on, from /proc: its socket descriptors'
/// inodes matched against the kernel's table of TCP sockets in LISTEN state.
/// Polls until found or `deadline` passes (a process under valgrind takes a
/// while to get there).
pub fn listening_addr(pid: u32, deadline: Duration) -> Option<String> {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                Some(
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect();
        let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is hex IP:port; state 0A is LISTEN; field 9 the inode.
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let (ip, port) = fields[1].split_once(':')?;
                let ip = u32::from_str_radix(ip, 16).ok()?;
                let port = u16::from_str_radix(port, 16).ok()?;
                return Some(format!(
                    "{}:{port}",
                    std::net::Ipv4Addr::from(u32::from_be(ip))
                ));
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
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
        // A failure here shows up as strace not exiting, below.
        let _ = process::signal(self.child.id(), Signal::INT);
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
