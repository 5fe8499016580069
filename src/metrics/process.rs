//! The standard `process_*` series, read from `/proc` at each scrape: CPU
//! time, resident memory, open and allowed descriptors, start time.
//!
//! These are the names and units every Prometheus client library exports
//! for its process, so that dashboards and alerts written for them work on
//! echod unchanged. Each is read with a few system calls (`/proc/self/stat`,
//! the `/proc/self/fd` directory, `getrlimit`); the start time, which never
//! changes, is worked out once. Nothing here is on the byte's path: only a
//! scrape calls it.

use std::fs;

/// What `/proc` says about this process, in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time spent, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads `/proc` for the values that change; `start_time_seconds` is the
/// one `start_time` worked out. `None` where `/proc` cannot be read (not
/// Linux, or not mounted): then no `process_*` series is reported.
pub fn read(start_time_seconds: f64) -> Option<Process> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let fields = Stat::parse(&stat)?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page_bytes = rustix::param::page_size() as u64;
    // The directory's own descriptor, open while it is listed, is not one
    // the process holds otherwise.
    let open_fds = fs::read_dir("/proc/self/fd")
        .ok()?
        .count()
        .saturating_sub(1) as u64;
    let max_fds = rlimit::Resource::NOFILE.get_soft().ok()?;
    Some(Process {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_memory_bytes: fields.rss_pages.saturating_mul(page_bytes),
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

/// When this process started, in seconds since the Unix epoch: the boot
/// time (`btime` in `/proc/stat`) plus the process's start in clock ticks
/// after boot (field 22 of `/proc/self/stat`). 0 if `/proc` cannot say.
pub fn start_time() -> f64 {
    let boot = fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|btime| btime.trim().parse::<u64>().ok())
    });
    let started = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| Stat::parse(&stat));
    match (boot, started) {
        (Some(boot), Some(stat)) => {
            boot as f64 + stat.starttime as f64 / rustix::param::clock_ticks_per_second() as f64
        }
        _ => 0.0,
    }
}

/// The fields of `/proc/self/stat` used here (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Field 14: user time, in clock ticks.
    utime: u64,
    /// Field 15: system time, in clock ticks.
    stime: u64,
    /// Field 22: start time after boot, in clock ticks.
    starttime: u64,
    /// Field 24: resident set size, in pages.
    rss_pages: u64,
}

impl Stat {
    /// Parses the line. The command name (field 2) is in parentheses and
    /// may hold spaces and parentheses itself, so the fields are counted
    /// from after its last `)`: field 3 is the first there.
    fn parse(line: &str) -> Option<Stat> {
        let (_, rest) = line.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            rss_pages: field(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 12345 1000000 250 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 7,
                stime: 3,
                starttime: 12345,
                rss_pages: 250
            })
        );
        assert_eq!(Stat::parse("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_read() {
        let start = start_time();
        assert!(start > 1e9, "started {start} s after the epoch");
        let process = read(start).expect("/proc is readable on Linux");
        assert!(process.resident_memory_bytes > 0);
        assert!(process.open_fds >= 3, "stdin, stdout, stderr: {process:?}");
        assert!(process.max_fds >= process.open_fds);
    }
}
