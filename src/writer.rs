//! The writer thread: where this process's posts are committed.
//!
//! Posts from every connection and from the HTTP API queue here. The thread
//! takes whatever has queued up as one batch, commits the batch to the store
//! in one transaction (the store gives the ids), and only then publishes it
//! to the board (when the store's feed is [`Feed::Writer`]) and answers the
//! posters. So a message is durable before anyone hears of it, ids are
//! assigned in commit order, and a burst of posts costs one commit, not one
//! each. The store's blocking calls stay on this thread, off the async
//! workers. On a shared store ([`Feed::Tail`]) the board hears of the batch
//! from the store's tail instead, like every other node.
//!
//! The thread owns the log's writing end: it is started with the log itself,
//! not reached through the board. A store call that panics fails only its
//! batch (`storage-error`) and the thread goes on; should the thread end
//! anyway, [`Writer::stopped`] tells the server, which stops the process
//! rather than answer every post that the board is shutting down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::board::Board;
use crate::protocol::{Code, Draft, Rejection};
use crate::store::{Appended, Feed, Log, StoreError};

/// Posts taken into one transaction at most.
const MAX_BATCH: usize = 1024;
/// Posts waiting for the writer before posters wait for room.
const QUEUE: usize = 8192;

/// What a poster gets back: the stored message (new, or the original of a
/// repeated cid), or why it was refused.
pub type Posted = Result<Appended, Rejection>;

struct Job {
    draft: Draft,
    reply: oneshot::Sender<Posted>,
}

/// A cheap-to-clone handle for posting to the board.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Closed when the thread ends, however it ends: the thread holds the
    /// sending half and drops it on the way out, unwinding included.
    running: watch::Receiver<()>,
}

impl Writer {
    /// Starts the writer thread, which appends to `log` and (when `feed` is
    /// [`Feed::Writer`]) publishes to `board`. It ends once every `Writer`
    /// handle is dropped and the queue is drained, so no accepted post is
    /// lost at shutdown.
    pub fn start(log: Arc<dyn Log>, board: Board, feed: Feed) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (alive, running) = watch::channel(());
        std::thread::Builder::new()
            .name("lanboard-writer".into())
            .spawn(move || {
                let _alive = alive;
                run(&*log, &board, feed, queue);
            })
            // Spawning a thread fails only when the OS is out of resources at start.
            .expect("the writer thread starts");
        Writer { jobs, running }
    }

    /// Completes once the writer thread has ended: at shutdown, after every
    /// handle is gone, or (a bug) while the board still runs.
    pub async fn stopped(&self) {
        let mut running = self.running.clone();
        // `changed` fails only once the thread dropped the sender; nothing
        // else is ever sent.
        while running.changed().await.is_ok() {}
    }

    /// Posts a message and waits until it is committed and published.
    pub async fn post(&self, draft: Draft) -> Posted {
        let (reply, answer) = oneshot::channel();
        let unavailable = || Rejection::new(Code::Unavailable, "the board is shutting down");
        self.jobs
            .send(Job { draft, reply })
            .await
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends one batch, turning a panic inside the store into an error for
/// this batch alone: the thread, and every later post, carry on.
fn append(log: &dyn Log, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError> {
    // The log is only read through `&self` and its own locks do not poison
    // (parking_lot), so it is as usable after the panic as before.
    catch_unwind(AssertUnwindSafe(|| log.append(drafts, time))).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(StoreError::Panicked(text.to_owned()))
    })
}

fn run(log: &dyn Log, board: &Board, feed: Feed, mut queue: mpsc::Receiver<Job>) {
    let mut drafts = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        drafts.push(first.draft);
        replies.push(first.reply);
        while drafts.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => {
                    drafts.push(job.draft);
                    replies.push(job.reply);
                }
                Err(_) => break,
            }
        }
        match append(log, std::mem::take(&mut drafts), now_ms()) {
            Ok(appended) => {
                if feed == Feed::Writer {
                    // A repeated cid is answered with the original, which
                    // everyone already has: only new messages go out.
                    board.publish(appended.iter().filter_map(|a| match a {
                        Appended::New(message) => Some(message),
                        Appended::Repeat(_) => None,
                    }));
                }
                for (reply, appended) in replies.drain(..).zip(appended) {
                    // A poster that went away no longer needs its answer; the
                    // message is stored and broadcast all the same.
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(error) => {
                let rejection = if error.is_unavailable() {
                    log::warn!("could not store {} message(s): {error}", replies.len());
                    Rejection::new(
                        Code::StorageUnavailable,
                        "the board's storage cannot be reached right now; the message was not \
                         stored. Send it again (with the same cid) in a moment",
                    )
                } else {
                    log::error!("could not store {} message(s): {error}", replies.len());
                    Rejection::new(
                        Code::StorageError,
                        "the message could not be stored; try again",
                    )
                };
                for reply in replies.drain(..) {
                    // As above: nobody left to tell is fine.
                    let _ = reply.send(Err(rejection.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::board::BoardConfig;
    use crate::protocol::Message;
    use crate::store::MemoryLog;

    /// A memory log whose first `append` panics, as a store with a bug might.
    #[derive(Default)]
    struct PanicsOnce {
        log: MemoryLog,
        panicked: AtomicBool,
    }

    impl Log for PanicsOnce {
        fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError> {
            if !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("the store broke");
            }
            self.log.append(drafts, time)
        }
        fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
            self.log.after(id, limit)
        }
        fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
            self.log.before(id, limit)
        }
        fn last_id(&self) -> Result<u64, StoreError> {
            self.log.last_id()
        }
        fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
            self.log.import(messages)
        }
        fn describe(&self) -> String {
            "a log that panics once".into()
        }
    }

    fn draft(text: &str) -> Draft {
        Draft::new("n", text, crate::cli::default_config().session.limits)
            .expect("a short message is valid")
    }

    fn start(log: Arc<dyn Log>) -> (Writer, Board) {
        let board = Board::open(log.clone(), BoardConfig::with_history(10))
            .expect("a memory log always opens");
        (Writer::start(log, board.clone(), Feed::Writer), board)
    }

    #[tokio::test]
    async fn a_panicking_store_fails_only_its_batch_and_later_posts_are_stored() {
        let (writer, board) = start(Arc::new(PanicsOnce::default()));
        let refused = writer.post(draft("lost")).await.unwrap_err();
        assert_eq!(refused.code, Code::StorageError);
        let stored = writer
            .post(draft("kept"))
            .await
            .expect("the writer goes on");
        assert_eq!(stored.message().id, 1);
        assert_eq!(board.last_id(), 1, "and the board has it");
    }

    #[tokio::test]
    async fn stopped_completes_once_the_thread_has_ended() {
        let (writer, _board) = start(Arc::new(MemoryLog::default()));
        let mut running = writer.running.clone();
        drop(writer);
        let ended = tokio::time::timeout(Duration::from_secs(5), running.changed()).await;
        assert!(matches!(ended, Ok(Err(_))), "the thread ended: {ended:?}");
    }
}
