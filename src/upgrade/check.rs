//! Step 1 of an upgrade: checking the new program before anything is
//! handed to it. `Check` runs `check` on a thread of its own, so that the
//! loop (or the coordinator) serves on while the program answers.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    CHECK_TIMEOUT, FORMAT_LINE_PREFIX, HANDOVER_FD_VARIABLE, PROGRAM_VARIABLE, Program,
    UpgradeError,
};
use crate::handover::FORMAT_VERSION;

/// A check of the new program under way on a thread of its own. The
/// thread calls `wake` once it has an answer; the loop then finds it
/// `answered` and takes the `outcome`.
#[derive(Debug)]
pub struct Check {
    answer: Receiver<Result<(), UpgradeError>>,
    /// The answer, once received.
    outcome: Option<Result<(), UpgradeError>>,
    /// When it began, for the log.
    pub started: Instant,
}

impl Check {
    /// Starts checking `program`; `wake` is called from the checking thread
    /// once the answer is in.
    ///
    /// # Errors
    ///
    /// If the thread cannot be started.
    pub fn start(
        program: &Program,
        wake: impl FnOnce() + Send + 'static,
    ) -> Result<Check, UpgradeError> {
        let (tell, answer) = mpsc::channel();
        let path = program.path.clone();
        thread::Builder::new()
            .name("echod-upgrade-check".into())
            .spawn(move || {
                let _ = tell.send(check(&path));
                wake();
            })
            .map_err(UpgradeError::Spawn)?;
        Ok(Check {
            answer,
            outcome: None,
            started: Instant::now(),
        })
    }

    /// True once the thread has given its answer.
    pub fn answered(&mut self) -> bool {
        if self.outcome.is_none() {
            self.outcome = match self.answer.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(UpgradeError::Spawn(
                    io::Error::other("the checking thread ended without an answer"),
                ))),
            };
        }
        self.outcome.is_some()
    }

    /// The answer; an error if there is none yet.
    pub fn outcome(&mut self) -> Result<(), UpgradeError> {
        self.answered();
        self.outcome.take().unwrap_or(Err(UpgradeError::Unsupported(
            "the check has not answered yet",
        )))
    }
}

/// Runs `path --version` and reads the handover format it names. Blocks
/// for up to `CHECK_TIMEOUT`; the program is killed if it takes longer.
pub fn check(path: &std::path::Path) -> Result<(), UpgradeError> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut command = Command::new(path);
    command
        .arg("--version")
        .env_remove(HANDOVER_FD_VARIABLE)
        .env_remove(PROGRAM_VARIABLE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = loop {
        match command.spawn() {
            Ok(child) => break child,
            // The file is still open for writing somewhere (a package
            // manager closing it, a process that forked meanwhile): that
            // passes, so try again within the check's time.
            Err(err)
                if err.kind() == io::ErrorKind::ExecutableFileBusy && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(UpgradeError::Spawn(err)),
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::CheckTimedOut);
            }
            // A child process has no readiness to wait for; poll it. This
            // runs on the checking thread, never on a loop.
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(err) => return Err(UpgradeError::Spawn(err)),
        }
    };
    if !status.success() {
        return Err(UpgradeError::CheckFailed(status));
    }
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // The child has exited: what it wrote is all in the pipe.
        let _ = stdout.by_ref().take(4096).read_to_string(&mut output);
    }
    let version = output
        .lines()
        .find_map(|line| line.strip_prefix(FORMAT_LINE_PREFIX))
        .and_then(|version| version.trim().parse::<u32>().ok())
        .ok_or(UpgradeError::NoFormat)?;
    if version != FORMAT_VERSION {
        return Err(UpgradeError::Format(version));
    }
    Ok(())
}
