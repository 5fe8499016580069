//! The deadline queue's storage: `(due_ms, key, id)` entries, soonest
//! first.
//!
//! Nearly every entry is pushed due at the loop's time plus the shortest
//! timeout (`Connections::arm`), and the loop's time never goes back, so the
//! entries arrive in the order they come due. Those go on the back of a
//! queue, at constant cost both ways, where a binary heap would sift every
//! one of them in and out. An entry due sooner than the queue's last (a
//! lingering connection's, a recheck of a send timeout already running)
//! goes into a heap beside it instead, so the queue stays sorted whatever
//! is pushed. The soonest entry is the sooner of the two fronts. libevent
//! keeps its "common timeouts", those of one duration, in plain queues for
//! the same reason.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// An entry: when to look, at which key, for which connection id (an entry
/// whose key now holds another connection is stale).
pub(super) type Entry = (u64, usize, u64);

/// The entries, soonest first.
#[derive(Debug, Default)]
pub(super) struct DeadlineQueue {
    /// Entries pushed no sooner than the one before: sorted by due time.
    in_order: VecDeque<Entry>,
    /// Every other entry.
    others: BinaryHeap<Reverse<Entry>>,
}

impl DeadlineQueue {
    /// Adds `entry`.
    pub(super) fn push(&mut self, entry: Entry) {
        match self.in_order.back() {
            Some(&(last_ms, ..)) if entry.0 < last_ms => self.others.push(Reverse(entry)),
            _ => self.in_order.push_back(entry),
        }
    }

    /// The soonest entry, if any.
    pub(super) fn peek(&self) -> Option<Entry> {
        match (self.in_order.front(), self.others.peek()) {
            (Some(&queued), Some(&Reverse(other))) => Some(queued.min(other)),
            (Some(&queued), None) => Some(queued),
            (None, Some(&Reverse(other))) => Some(other),
            (None, None) => None,
        }
    }

    /// Takes the soonest entry out.
    pub(super) fn pop(&mut self) -> Option<Entry> {
        let from_queue = match (self.in_order.front(), self.others.peek()) {
            (Some(queued), Some(Reverse(other))) => queued <= other,
            (queued, _) => queued.is_some(),
        };
        if from_queue {
            self.in_order.pop_front()
        } else {
            self.others.pop().map(|Reverse(entry)| entry)
        }
    }

    /// How many entries there are, stale ones included.
    pub(super) fn len(&self) -> usize {
        self.in_order.len() + self.others.len()
    }

    /// Keeps only the entries for which `keep` holds, and gives memory back
    /// if far more is held than `live` entries need.
    pub(super) fn retain(&mut self, live: usize, mut keep: impl FnMut(&Entry) -> bool) {
        self.in_order.retain(&mut keep);
        self.others.retain(|Reverse(entry)| keep(entry));
        if self.in_order.capacity() > 2 * live {
            self.in_order.shrink_to(live);
        }
        if self.others.capacity() > 2 * live {
            self.others.shrink_to(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pops everything: the due times must come out in order.
    fn drain(queue: &mut DeadlineQueue) -> Vec<u64> {
        std::iter::from_fn(|| {
            let peeked = queue.peek();
            let popped = queue.pop();
            assert_eq!(peeked, popped, "peek names the entry pop takes");
            popped
        })
        .map(|(due_ms, ..)| due_ms)
        .collect()
    }

    #[test]
    fn entries_come_out_soonest_first_in_whatever_order_they_went_in() {
        let mut queue = DeadlineQueue::default();
        // In order, then sooner ones (into the heap), then later ones again.
        for (i, due_ms) in [10, 20, 20, 30, 5, 25, 15, 40, 35, 50]
            .into_iter()
            .enumerate()
        {
            queue.push((due_ms, i, i as u64));
        }
        assert_eq!(queue.len(), 10);
        assert_eq!(drain(&mut queue), [5, 10, 15, 20, 20, 25, 30, 35, 40, 50]);
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_pseudo_random_mix_comes_out_sorted() {
        let mut queue = DeadlineQueue::default();
        let mut expected = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut now_ms = 0;
        for i in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now_ms += x % 3;
            // Mostly "now plus the shortest timeout", sometimes sooner.
            let due_ms = if x.is_multiple_of(5) {
                now_ms + x % 50
            } else {
                now_ms + 100
            };
            queue.push((due_ms, i, 0));
            expected.push(due_ms);
            if x.is_multiple_of(7) {
                let soonest = expected.iter().copied().min();
                assert_eq!(queue.pop().map(|(due_ms, ..)| due_ms), soonest);
                let at = expected.iter().position(|&d| Some(d) == soonest);
                expected.remove(at.expect("the soonest is there"));
            }
        }
        expected.sort_unstable();
        assert_eq!(drain(&mut queue), expected);
    }

    #[test]
    fn retain_keeps_the_order_of_what_it_keeps() {
        let mut queue = DeadlineQueue::default();
        for (i, due_ms) in [10, 30, 20, 40, 15].into_iter().enumerate() {
            queue.push((due_ms, i, 0));
        }
        queue.retain(4, |&(_, key, _)| key != 1);
        assert_eq!(drain(&mut queue), [10, 15, 20, 40]);
    }
}
