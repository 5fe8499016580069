//! A process watched from the outside: its resident memory, open
//! descriptors and CPU time as `/proc/PID` reports them, the clock tick CPU
//! time is counted in, and signals.
//!
//! Every reading is one fresh look at `/proc` (nothing is cached), and
//! every error names the file that could not be read or parsed, so a test
//! can `expect` it and a tool can treat it as "the process has gone". The
//! text formats are in `proc_pid_status(5)` and `proc_pid_stat(5)`; the
//! parsers are separate functions so that they are tested on fixed text.

use std::fs;
use std::io;
use std::time::Duration;

use rustix::process::Pid;

/// The signals a tool sends (`Signal::TERM`, `Signal::INT`, `Signal::KILL`,
/// `Signal::USR1`, ...), as `rustix` names them.
pub use rustix::process::Signal;

/// A process's resource use at one instant, from `/proc/PID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Entries in `/proc/PID/fd`: every descriptor the process has open.
    pub descriptors: usize,
    /// User plus system CPU time of all its threads since it started, at
    /// the resolution of the clock tick.
    pub cpu: Duration,
}

impl Sample {
    /// Reads the three figures of `pid`, one file after another (they are
    /// not one atomic snapshot, which no `/proc` reader gets).
    ///
    /// # Errors
    ///
    /// If any of the files cannot be read or parsed, as when the process
    /// has exited.
    pub fn read(pid: u32) -> io::Result<Sample> {
        Ok(Sample {
            rss_bytes: rss_bytes(pid)?,
            descriptors: open_descriptors(pid)?,
            cpu: cpu_time(pid)?,
        })
    }
}

/// The resident set size of `pid` in bytes (`VmRSS` in `/proc/PID/status`).
///
/// # Errors
///
/// If the file cannot be read or has no `VmRSS` line (a zombie has none).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// A size field of `/proc/PID/status` in bytes: `VmRSS`, `VmHWM` (the peak
/// resident set size), `VmSize`, ...
///
/// # Errors
///
/// If the file cannot be read or has no such field.
pub fn status_bytes(pid: u32, field: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = read(&path)?;
    parse_status_kib(&status, field)
        .map(|kib| kib * 1024)
        .ok_or_else(|| invalid(&path, &format!("no {field} field in kB")))
}

/// How many descriptors `pid` has open (the entries of `/proc/PID/fd`).
///
/// # Errors
///
/// If the directory cannot be read: the process has gone, or belongs to
/// another user.
pub fn open_descriptors(pid: u32) -> io::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&path).map_err(|err| annotate(&path, err))?;
    Ok(entries.count())
}

/// The CPU time `pid` has used, user plus system, all its threads (living
/// and exited), since it started: `utime + stime` in `/proc/PID/stat`,
/// which counts in clock ticks (see [`clock_ticks_per_second`]).
///
/// # Errors
///
/// If the file cannot be read or parsed.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = read(&path)?;
    let ticks =
        parse_stat_cpu_ticks(&stat).ok_or_else(|| invalid(&path, "no utime and stime fields"))?;
    Ok(ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, the kernel's `USER_HZ`):
/// the unit of `utime` and `stime` in `/proc`. 100 on every Linux port
/// today, but read, not assumed.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Sends `signal` to `pid` (`kill(2)`).
///
/// The caller must know that `pid` is still the process it means: a child
/// not yet reaped, for instance. A pid that has been reaped may already
/// name another process.
///
/// # Errors
///
/// If `pid` is 0 or too large to be a pid (`InvalidInput`), if there is no
/// such process (`ESRCH`) or it is not ours to signal (`EPERM`).
pub fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    // 0 would mean "our process group", and values above i32::MAX wrap to
    // negative numbers, which name groups too: neither is one process.
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a pid"))
        })?;
    Ok(rustix::process::kill_process(pid, signal)?)
}

/// The value in KiB of `field` in the text of a `/proc/PID/status` file:
/// the line `VmRSS:     1234 kB` gives 1234.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// `utime + stime`, in clock ticks, from the text of a `/proc/PID/stat`
/// file.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // Field 2, the command name, is in parentheses and may itself hold
    // spaces and parentheses; the last ')' ends it. utime and stime are
    // fields 14 and 15, so the 12th and 13th after the name.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `ticks` clock ticks as a `Duration`, exactly (no floating point).
fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let whole = Duration::from_secs(ticks / per_second);
    let part = (ticks % per_second) * 1_000_000_000 / per_second;
    whole + Duration::from_nanos(part)
}

fn read(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|err| annotate(path, err))
}

fn annotate(path: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{path}: {err}"))
}

fn invalid(path: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {what}"))
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\techod\nVmPeak:\t  10000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nRssAnon:\t 512 kB\n";
        let cases = [
            ("VmRSS", Some(1024)),
            ("VmHWM", Some(2048)),
            // A prefix of another field's name is not that field.
            ("Rss", None),
            ("VmSwap", None),
            // Not a size.
            ("Name", None),
        ];
        for (field, kib) in cases {
            assert_eq!(parse_status_kib(status, field), kib, "{field}");
        }
    }

    #[test]
    fn cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (echo (d) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 2 0 12345";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(100));
        assert_eq!(parse_stat_cpu_ticks("4242 (echod) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no command name"), None);
    }

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(ticks_to_duration(0, 100), Duration::ZERO);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let pid = std::process::id();
        let sample = Sample::read(pid).expect("sample this process");
        assert!(sample.rss_bytes > 0);
        // Standard input, output and error at least, unless the harness
        // closed them; the directory listing itself holds one more.
        assert!(sample.descriptors >= 1);
        // The kernel's resident counters are approximate per-CPU sums, so
        // two reads of the file may disagree; within one read the peak is
        // computed from the same total and can never be below it.
        let status = read(&format!("/proc/{pid}/status")).expect("read status");
        let rss = parse_status_kib(&status, "VmRSS").expect("VmRSS");
        let peak = parse_status_kib(&status, "VmHWM").expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "VmRSS {rss} kB, VmHWM {peak} kB");
        assert!(status_bytes(pid, "VmHWM").expect("VmHWM") > 0);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn a_process_that_has_gone_is_an_error_that_names_its_file() {
        // Above the kernel's largest pid (2^22), so no process has it.
        let gone = 1 << 23;
        let err = rss_bytes(gone).expect_err("no such process");
        assert!(
            err.to_string().contains(&format!("/proc/{gone}/status")),
            "{err}"
        );
        assert!(open_descriptors(gone).is_err());
        assert!(cpu_time(gone).is_err());
        assert!(signal(gone, Signal::TERM).is_err());
    }

    #[test]
    fn zero_and_group_pids_are_refused() {
        for pid in [0, u32::MAX] {
            let err = signal(pid, Signal::TERM).expect_err("not one process");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{pid}");
        }
    }

    #[test]
    fn a_signal_reaches_a_child() {
        // `sleep` outlives the test by far unless the signal arrives; even
        // then the wait ends when it does, so nothing can hang.
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep");
        signal(child.id(), Signal::TERM).expect("signal the child");
        let status = child.wait().expect("wait for the child");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
    }
}
