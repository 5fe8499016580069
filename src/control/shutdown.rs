//! Stopping a loop from another thread, as SIGTERM would: a count of
//! requests shared by every `ShutdownHandle`, and the loop's waker to make
//! it look. The loop's end, `ShutdownRequests`, turns each new request into
//! a `Request::Shutdown`. The same handle carries the one other thing a
//! worker's coordinator asks of it: to hand over everything it serves for
//! an upgrade in place (`HandOverOrder`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mio::Waker;

use super::Request;
use crate::upgrade::HandOverOrder;

/// Stops a running server from another thread, as SIGTERM would.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    /// Requests made through every handle of this server; it only grows.
    requested: Arc<AtomicUsize>,
    /// Wakes the server's poll, which then reads `requested`.
    waker: Arc<Waker>,
    /// An order to hand over, waiting for the loop to take it.
    order: Arc<Mutex<Option<HandOverOrder>>>,
}

/// The server's end of its shutdown handles: how many requests were made,
/// and how many the loop has taken.
#[derive(Debug)]
pub struct ShutdownRequests {
    /// Shared with every `ShutdownHandle`; counts `trigger` calls.
    requested: Arc<AtomicUsize>,
    /// How many of `requested` have become a `Request`; never more than
    /// `requested` held when last read.
    taken: usize,
    /// The waker registered with the server's poll.
    waker: Arc<Waker>,
    /// Shared with every `ShutdownHandle`.
    order: Arc<Mutex<Option<HandOverOrder>>>,
}

impl ShutdownHandle {
    /// Asks the loop to hand over everything it serves, between two
    /// events, and then to wait for the verdict (`HandOverOrder`). An
    /// order not yet taken is replaced.
    pub(crate) fn order_hand_over(&self, order: HandOverOrder) {
        if let Ok(mut slot) = self.order.lock() {
            *slot = Some(order);
        }
        let _ = self.waker.wake();
    }

    /// Makes the loop look at what it waits for from other threads without
    /// asking it to stop: an upgrade's check has its answer.
    pub(crate) fn wake_for_upgrade(&self) {
        let _ = self.waker.wake();
    }

    /// Asks the server to stop: the first call is a graceful shutdown, a
    /// second one stops it at once, however close together the two are.
    pub fn trigger(&self) {
        // Counted before the wake-up, because the wake-up alone cannot
        // count: mio's waker is an eventfd, and wake-ups made before the loop
        // polls arrive as one event. The event says "look"; the count says
        // how many requests there were.
        self.requested.fetch_add(1, Ordering::SeqCst);
        // Writing to the eventfd fails only if the server's poll instance
        // is already gone, which is the outcome the caller wanted.
        let _ = self.waker.wake();
    }
}

impl ShutdownRequests {
    /// The requests made through handles that wake `waker`, which the loop
    /// has registered at a token of its own.
    pub fn new(waker: Waker) -> ShutdownRequests {
        ShutdownRequests {
            requested: Arc::new(AtomicUsize::new(0)),
            taken: 0,
            waker: Arc::new(waker),
            order: Arc::default(),
        }
    }

    /// A handle that any thread may trigger.
    pub fn handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.requested),
            waker: Arc::clone(&self.waker),
            order: Arc::clone(&self.order),
        }
    }

    /// The order to hand over, if the coordinator has given one.
    pub fn take_hand_over_order(&mut self) -> Option<HandOverOrder> {
        self.order.lock().ok()?.take()
    }

    /// Whether an order to hand over waits to be taken.
    pub fn hand_over_ordered(&self) -> bool {
        self.order.lock().is_ok_and(|slot| slot.is_some())
    }

    /// On the waker's event: one `Request::Shutdown` for each `trigger`
    /// since the last call. None at all is normal: the loop may already
    /// have taken a request whose wake-up arrives now.
    pub fn take(&mut self) -> std::iter::RepeatN<Request> {
        let requested = self.requested.load(Ordering::SeqCst);
        let new = requested.wrapping_sub(self.taken);
        self.taken = requested;
        std::iter::repeat_n(
            Request::Shutdown {
                why: "shutdown requested",
            },
            new,
        )
    }
}
