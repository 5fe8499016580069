//! The loop's clock: milliseconds of `CLOCK_MONOTONIC`, read once a turn
//! (`Server::run`) and counted from the loop's start, which a loop that
//! took over from the program before sets further back
//! (`Server::take_over`).
//!
//! It is read with libc's `clock_gettime` (which uses the vDSO, and is no
//! cancellation point) and turned into milliseconds with a multiplication
//! and a division by a constant: `Instant` reads the same clock, but would
//! cost a subtraction of two timespecs on top, with its carries and checks,
//! on every turn. (rustix's own `clock_gettime` finds the vDSO by parsing
//! the auxiliary vector, which crashes under valgrind, and the benchmarks
//! count instructions with callgrind.) `Instant` is still
//! used where a time is shown or rates are worked out (the stats line,
//! rate-limited warnings), which happens seldom.

/// Milliseconds since an origin, on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The monotonic clock's reading, in milliseconds, at time 0.
    origin_ms: u64,
}

impl Clock {
    /// A clock that reads `now_ms` now: 0 for a loop just started, the
    /// oldest age handed over for a loop that took over.
    pub fn reading(now_ms: u64) -> Clock {
        Clock {
            origin_ms: monotonic_ms().saturating_sub(now_ms),
        }
    }

    /// The time now.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        monotonic_ms().saturating_sub(self.origin_ms)
    }
}

/// `CLOCK_MONOTONIC` in whole milliseconds. It counts from boot and never
/// goes back, so neither field is ever negative; the same clock is read by
/// every process, so a loop that takes over reads the times handed to it
/// on the same scale.
#[inline]
fn monotonic_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid `timespec` for the call to write. The call
    // can fail only for a clock the kernel does not have or a pointer it
    // cannot write (`EINVAL`, `EFAULT`), and neither can happen here:
    // `CLOCK_MONOTONIC` is what `Instant` reads, and std treats its failure
    // as impossible too.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000 + nanos / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_reads_what_it_was_set_to_and_never_goes_back() {
        let clock = Clock::reading(5_000);
        let first = clock.now_ms();
        // Set to 5 s an instant ago: at least that now, and not a day more.
        assert!((5_000..5_000 + 86_400_000).contains(&first), "{first}");
        let mut last = first;
        for _ in 0..1_000 {
            let now = clock.now_ms();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
    }

    #[test]
    fn it_keeps_time_with_instant() {
        use std::time::{Duration, Instant};
        let clock = Clock::reading(0);
        // Each span of the clock is bracketed by one of `Instant` outside
        // it and one inside, so that however the thread is scheduled the
        // two must agree to the millisecond each rounds down.
        let outer = Instant::now();
        let begun_ms = clock.now_ms();
        let inner = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let inner_ms = inner.elapsed().as_millis();
        let passed_ms = u128::from(clock.now_ms() - begun_ms);
        let outer_ms = outer.elapsed().as_millis();
        assert!(passed_ms >= 29, "{passed_ms} ms in a 30 ms sleep");
        assert!(
            inner_ms <= passed_ms + 1,
            "{inner_ms} ms inside {passed_ms}"
        );
        assert!(
            passed_ms <= outer_ms + 1,
            "{passed_ms} ms inside {outer_ms}"
        );
    }
}
