//! The echod under attack: started here (and stopped with SIGTERM at the
//! end), or already running; sampled from `/proc` once a second; and, for
//! the exhaustion period, held to fewer descriptors with `prlimit(2)`.
//!
//! Lowering the soft `RLIMIT_NOFILE` of a running echod to the number it has
//! open is exactly "out of descriptors" from echod's point of view: the next
//! `accept` fails with `EMFILE` until a connection closes or the limit is
//! raised again. No privilege is needed to lower a soft limit, or to raise
//! it back up to the hard one, for a process of the same user.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use echod_kit::process::{self, Sample, Signal};
use rlimit::Resource;

/// How long echod may take to print its address, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The echod process under attack.
#[derive(Debug)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, if known (always, when started here).
    pub pid: Option<u32>,
    child: Option<Child>,
    /// The soft descriptor limit to restore after an exhaustion period.
    saved_limit: Option<u64>,
    /// Set once `exited` has reaped the child: its pid may name another
    /// process from then on, so it is never signalled again.
    exit_status: Option<ExitStatus>,
}

impl Target {
    /// Starts `echod` on an ephemeral loopback port with `args` added, and
    /// waits for it to say where it listens. Its log is read and discarded
    /// on a helper thread, so that it never stalls.
    ///
    /// # Errors
    ///
    /// If echod cannot be started or does not report an address in time.
    pub fn spawn(echod: &Path, args: &[String]) -> io::Result<Target> {
        Target::spawn_in(&[], echod, "127.0.0.1:0", args)
    }

    /// Starts `echod -l LISTEN ARGS` as [`Target::spawn`] does, run by
    /// `wrapper` if it is not empty: `ip netns exec NAME`, which execs echod
    /// in the namespace, so that the pid is still echod's.
    ///
    /// # Errors
    ///
    /// If echod cannot be started or does not report an address in time.
    pub fn spawn_in(
        wrapper: &[&str],
        echod: &Path,
        listen: &str,
        args: &[String],
    ) -> io::Result<Target> {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(echod);
                command
            }
            None => Command::new(echod),
        };
        let mut child = command
            .args(["-l", listen])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| {
                // The usual cause: the daemon was never built. echo-chaos
                // looks beside itself, where `cargo build --release
                // --workspace` puts both.
                let hint = if err.kind() == io::ErrorKind::NotFound {
                    " (build it with `cargo build --release`, or give --echod PATH)"
                } else {
                    ""
                };
                io::Error::new(err.kind(), format!("{}: {err}{hint}", echod.display()))
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (address_tx, address_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            let mut address = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((_, listening)) = line.split_once("listening on ") {
                    address.get_or_insert_with(|| listening.trim().to_owned());
                }
                // The line with the limits comes once every descriptor echod
                // keeps for itself is open (the signal pipe comes after the
                // listeners): only from then on is its count a baseline.
                if line.contains(" max-connections ") {
                    if let (Some(tx), Some(address)) = (address_tx.take(), address.take()) {
                        let _ = tx.send(address);
                    }
                }
            }
        });
        let address = match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("echod did not report a listening address"));
            }
        };
        let addr = address
            .parse()
            .map_err(|_| io::Error::other(format!("unexpected address {address:?}")))?;
        Ok(Target {
            addr,
            pid: Some(child.id()),
            child: Some(child),
            saved_limit: None,
            exit_status: None,
        })
    }

    /// An echod already running at `addr`, with process id `pid` if known.
    pub fn attach(addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            addr,
            pid,
            child: None,
            saved_limit: None,
            exit_status: None,
        }
    }

    /// Reads echod's resource use, or `None` if its pid is unknown or it has
    /// gone.
    pub fn sample(&self) -> Option<Sample> {
        Sample::read(self.pid?).ok()
    }

    /// Limits echod's address space (`RLIMIT_AS`, soft and hard) to
    /// `bytes` with `prlimit(2)`, as `prlimit --as=BYTES` would have at its
    /// start: every allocation from then on that would pass it fails.
    ///
    /// # Errors
    ///
    /// If the pid is unknown or `prlimit(2)` refuses.
    pub fn limit_address_space(&self, bytes: u64) -> io::Result<()> {
        rlimit::prlimit(self.pid_t()?, Resource::AS, Some((bytes, bytes)), None)
    }

    /// echod's exit status if the echod started here has exited (it is then
    /// reaped, and `stop` reports it again); `None` while it runs, or for an
    /// echod that was already running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.exit_status = Some(status);
        Some(status)
    }

    /// Lowers echod's soft descriptor limit to `soft`, remembering the old
    /// one for `restore_descriptors`.
    ///
    /// # Errors
    ///
    /// If the pid is unknown or `prlimit(2)` refuses.
    pub fn limit_descriptors(&mut self, soft: u64) -> io::Result<()> {
        let old_soft = self.set_soft_descriptors(soft)?;
        self.saved_limit.get_or_insert(old_soft);
        Ok(())
    }

    /// Puts back the soft descriptor limit `limit_descriptors` lowered.
    ///
    /// # Errors
    ///
    /// If `prlimit(2)` refuses.
    pub fn restore_descriptors(&mut self) -> io::Result<()> {
        match self.saved_limit.take() {
            Some(soft) => self.set_soft_descriptors(soft).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Sets echod's soft descriptor limit (never above its hard limit) with
    /// `prlimit(2)` and returns the soft limit it replaced.
    fn set_soft_descriptors(&self, soft: u64) -> io::Result<u64> {
        let pid = self.pid_t()?;
        let (mut old_soft, mut hard) = (0, 0);
        rlimit::prlimit(
            pid,
            Resource::NOFILE,
            None,
            Some((&mut old_soft, &mut hard)),
        )?;
        rlimit::prlimit(pid, Resource::NOFILE, Some((soft.min(hard), hard)), None)?;
        Ok(old_soft)
    }

    /// Stops an echod started here with SIGTERM and returns its exit status
    /// (killing it if it has not exited after `EXIT_TIMEOUT`). `None` for an
    /// echod that was already running.
    pub fn stop(&mut self) -> Option<io::Result<ExitStatus>> {
        let mut child = self.child.take()?;
        if let Some(status) = self.exit_status {
            return Some(Ok(status));
        }
        // The pid is our child's and it has not been reaped (only this
        // function waits for it, once), so it cannot name another process.
        if let Err(err) = process::signal(child.id(), Signal::TERM) {
            return Some(Err(err));
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(Ok(status)),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(Err(io::Error::other(format!(
                        "echod did not exit within {EXIT_TIMEOUT:?} of SIGTERM; killed"
                    ))));
                }
                Err(err) => return Some(Err(err)),
            }
        }
    }

    fn pid_t(&self) -> io::Result<libc::pid_t> {
        self.pid
            .map(|pid| pid as libc::pid_t)
            .ok_or_else(|| io::Error::other("echod's pid is unknown (give --pid)"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // An early return from the run: never leave echod behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
