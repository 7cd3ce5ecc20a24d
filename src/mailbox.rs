//! One connection's mailbox: the board frames queued for it, in board order,
//! with their size, for the connection to take all at once.
//!
//! The board puts each batch of frames in every connection's mailbox, so
//! this is the fan-out's innermost step, once per connection per batch. A
//! short lock around a queue costs less there than a general channel (its
//! semaphore, block list and atomic waker showed as a sixth of the server's
//! time under fan-out), and it keeps the byte count that decides when a
//! connection is too slow in the same place as the frames it counts.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use parking_lot::Mutex;

use crate::board::Outgoing;

/// The frames queued for one connection. Shared by the board (which puts)
/// and the connection (which takes); either may close it.
#[derive(Default)]
pub struct Mailbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each item with its size as counted in `bytes`.
    items: VecDeque<(Outgoing, usize)>,
    /// Bytes put and not yet written: items queued, and those taken and
    /// still being written.
    bytes: usize,
    /// The connection's task, when it waits for frames.
    waiting: Option<Waker>,
    /// No more frames will come: the board closed, or the connection fell
    /// behind and was cut off. Frames already queued are still taken.
    closed: bool,
}

/// Items taken from a mailbox, and their bytes to hand back to
/// [`Mailbox::written`] once written.
pub struct Taken {
    pub items: Vec<Outgoing>,
    pub bytes: usize,
}

/// How much a mailbox may hold before its connection counts as too slow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub items: usize,
    pub bytes: usize,
}

impl Mailbox {
    /// Queues `item` of `bytes` bytes. Returns false, and closes the
    /// mailbox, if that would pass `bounds`; false too if it was closed.
    pub fn put(&self, item: &Outgoing, bytes: usize, bounds: Bounds) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        let fits = state.items.len() < bounds.items && state.bytes + bytes <= bounds.bytes;
        if fits {
            state.items.push_back((item.clone(), bytes));
            state.bytes += bytes;
        } else {
            state.closed = true;
        }
        let waiting = state.waiting.take();
        drop(state);
        // Woken outside the lock, so the woken task never waits for it.
        if let Some(waker) = waiting {
            waker.wake();
        }
        fits
    }

    /// Ends the mailbox: the connection takes what is queued, then learns
    /// that nothing more will come.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        let waiting = state.waiting.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Waits for frames and takes the oldest items, as many as hold up to
    /// `frames` frames (at least one item). `None` once the mailbox is
    /// closed and empty. Cancel-safe: items leave the queue only in the
    /// poll that returns them.
    pub async fn take(&self, frames: usize) -> Option<Taken> {
        poll_fn(|cx| {
            let mut state = self.state.lock();
            if state.items.is_empty() {
                if state.closed {
                    return Poll::Ready(None);
                }
                match &mut state.waiting {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waiting => *waiting = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            let mut count = 0;
            let mut taken = 0;
            let mut bytes = 0;
            for (item, size) in &state.items {
                if count > 0 && taken + item.len() > frames {
                    break;
                }
                taken += item.len();
                bytes += size;
                count += 1;
            }
            let items = state.items.drain(..count).map(|(item, _)| item).collect();
            Poll::Ready(Some(Taken { items, bytes }))
        })
        .await
    }

    /// Records that `bytes` of taken frames have been written.
    pub fn written(&self, bytes: usize) {
        let mut state = self.state.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn item(frames: usize) -> Outgoing {
        (0..frames).map(|_| Bytes::from_static(b"frame")).collect()
    }

    const ROOMY: Bounds = Bounds {
        items: 100,
        bytes: 1 << 20,
    };

    #[tokio::test]
    async fn items_are_taken_in_the_order_they_were_put_up_to_a_number_of_frames() {
        let mailbox = Mailbox::default();
        for frames in [1, 2, 3, 4] {
            assert!(mailbox.put(&item(frames), frames * 5, ROOMY));
        }
        let first = mailbox.take(3).await.expect("frames are queued");
        assert_eq!(
            first.items.iter().map(|i| i.len()).collect::<Vec<_>>(),
            [1, 2]
        );
        let next = mailbox.take(3).await.expect("frames are queued");
        assert_eq!(next.items.iter().map(|i| i.len()).collect::<Vec<_>>(), [3]);
        // An item larger than the batch still goes, alone.
        let last = mailbox.take(3).await.expect("frames are queued");
        assert_eq!(last.items.iter().map(|i| i.len()).collect::<Vec<_>>(), [4]);
    }

    #[tokio::test]
    async fn a_mailbox_past_its_bytes_closes_and_gives_what_it_held_first() {
        let mailbox = Mailbox::default();
        let bounds = Bounds {
            items: 100,
            bytes: 10,
        };
        assert!(mailbox.put(&item(1), 6, bounds));
        assert!(!mailbox.put(&item(1), 6, bounds), "16 bytes is past 10");
        assert!(!mailbox.put(&item(1), 1, bounds), "closed for good");
        assert_eq!(mailbox.take(10).await.map(|b| b.items.len()), Some(1));
        assert!(mailbox.take(10).await.is_none());
    }

    #[tokio::test]
    async fn frames_being_written_count_until_they_are_written() {
        let bounds = Bounds {
            items: 100,
            bytes: 10,
        };
        let writing = Mailbox::default();
        assert!(writing.put(&item(1), 8, bounds));
        let _batch = writing.take(10).await;
        assert!(!writing.put(&item(1), 8, bounds));

        let written = Mailbox::default();
        assert!(written.put(&item(1), 8, bounds));
        let batch = written.take(10).await.expect("an item is queued");
        assert_eq!(
            batch.bytes, 8,
            "a batch carries the bytes its items were put with"
        );
        written.written(batch.bytes);
        assert!(written.put(&item(1), 8, bounds));
    }

    #[tokio::test]
    async fn a_mailbox_past_its_items_closes() {
        let mailbox = Mailbox::default();
        let bounds = Bounds {
            items: 2,
            bytes: 1 << 20,
        };
        assert!(mailbox.put(&item(1), 1, bounds));
        assert!(mailbox.put(&item(1), 1, bounds));
        assert!(!mailbox.put(&item(1), 1, bounds));
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_for_a_put_and_for_a_close() {
        let mailbox = Arc::new(Mailbox::default());
        let taker = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take(10).await.map(|b| b.items.len()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(mailbox.put(&item(1), 1, ROOMY));
        assert_eq!(taker.await.unwrap(), Some(1));

        let taker = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take(10).await.map(|b| b.items.len()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        mailbox.close();
        assert_eq!(taker.await.unwrap(), None);
    }
}
