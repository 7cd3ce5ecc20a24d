//! The writer thread: where this process's posts are committed.
//!
//! Posts, edits, deletions and blocks from every connection and from the
//! HTTP API queue here. The thread takes whatever has queued up as one
//! batch, commits the batch to the store in one transaction (the store
//! gives the ids and checks the keys), and only then publishes it to the
//! board (when the store's feed is [`Feed::Writer`]) and answers the
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

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::board::Board;
use crate::guard::Guard;
use crate::protocol::{self, Code, Draft, Rejection};
use crate::store::{Actor, Appended, Denied, Done, Feed, Log, Op, Outcome, StoreError, Tidy};

/// Posts taken into one transaction at most.
const MAX_BATCH: usize = 1024;
/// Posts waiting for the writer before posters wait for room.
const QUEUE: usize = 8192;

/// What a poster gets back: the stored message (new, or the original of a
/// repeated cid), or why it was refused.
pub type Posted = Result<Appended, Rejection>;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, Rejection>>,
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
        match self.submit(Op::Post(draft)).await? {
            Done::Posted(appended) => Ok(appended),
            other => unreachable!("a post is answered as a post, not {other:?}"),
        }
    }

    /// Hands `op` to the writer and waits until it is committed and
    /// published, or refused.
    pub async fn submit(&self, op: Op) -> Result<Done, Rejection> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || Rejection::new(Code::Unavailable, "the board is shutting down");
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }

    /// [`Writer::submit`] for an op that carries a key (an edit, a deletion,
    /// a block) from `ip`: keys are secrets, so an address that has spent
    /// its budget of wrong guesses is refused before its key is looked at,
    /// and a key refused as `forbidden` counts as a wrong guess.
    pub async fn submit_keyed(
        &self,
        op: Op,
        guard: &Guard,
        ip: Option<IpAddr>,
    ) -> Result<Done, Rejection> {
        guard.may_guess(ip).map_err(|refusal| refusal.rejection)?;
        let answer = self.submit(op).await;
        if matches!(&answer, Err(rejection) if rejection.code == Code::Forbidden) {
            guard.missed(ip);
        }
        answer
    }
}

/// What an ack carries for `done`: the stored or edited message (an edit's
/// with its `change`), `{"id"}` for a deletion, `{"id","until"}` for a block.
pub fn ack_data(done: &Done) -> serde_json::Value {
    match done {
        Done::Posted(appended) => serde_json::json!(appended.message()),
        Done::Edited { message, change } => protocol::edited_data(message, *change),
        Done::Deleted { id, .. } => serde_json::json!({ "id": id }),
        Done::Blocked { id, until } => serde_json::json!({ "id": id, "until": until }),
    }
}

/// The answer a client gets for a refused op.
pub fn refusal(denied: Denied) -> Rejection {
    match denied {
        Denied::Forbidden => Rejection::new(
            Code::Forbidden,
            "that key may not do this: only the key that posted a message edits it, and it or \
             the board's operator deletes it; only the operator blocks",
        ),
        Denied::NotFound => Rejection::new(
            Code::NotFound,
            "there is no such message: it was never posted or has been deleted",
        ),
        Denied::UnknownFile { id } => Rejection::new(
            Code::BadRequest,
            format!(
                "there is no file {id}: upload it with POST /api/files first (a file no \
                 message carries is removed an hour after its upload)"
            ),
        ),
        Denied::Blocked { until } => Rejection {
            until: Some(until),
            ..Rejection::new(
                Code::Blocked,
                "the board's operator has blocked posts from your address for now",
            )
        },
    }
}

/// Logs what an operator or a deletion did, by message id, never its text.
fn log_done(done: &Done) {
    match done {
        Done::Deleted { id, change, by } => {
            let by = match by {
                Actor::Author => "its author",
                Actor::Operator => "the operator",
            };
            log::info!("message {id} deleted by {by} (change {change})");
        }
        Done::Blocked { id, until } => {
            log::info!("the operator blocked the sender of message {id} until {until} (ms)");
        }
        Done::Posted(_) | Done::Edited { .. } => {}
    }
}

/// Milliseconds since the Unix epoch, the board's clock for times it stores.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Commits one batch, turning a panic inside the store into an error for
/// this batch alone: the thread, and every later post, carry on.
fn commit(log: &dyn Log, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError> {
    // The log is only read through `&self` and its own locks do not poison
    // (parking_lot), so it is as usable after the panic as before.
    catch_unwind(AssertUnwindSafe(|| log.commit(ops, time))).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(StoreError::Panicked(text.to_owned()))
    })
}

fn run(log: &dyn Log, board: &Board, feed: Feed, mut queue: mpsc::Receiver<Job>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    // Only for waiting on the queue with a timeout, while the store has
    // housekeeping due later.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("the writer's timer starts");
    while let Some(first) = next_job(log, &mut queue, &clock) {
        ops.push(first.op);
        replies.push(first.reply);
        while ops.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => {
                    ops.push(job.op);
                    replies.push(job.reply);
                }
                Err(_) => break,
            }
        }
        match commit(log, std::mem::take(&mut ops), now_ms()) {
            Ok(outcomes) => {
                if feed == Feed::Writer {
                    // A repeated cid is answered with the original, which
                    // everyone already has, and a block changes no message:
                    // only what changed the board goes out.
                    let events: Vec<_> = outcomes
                        .iter()
                        .filter_map(|outcome| outcome.as_ref().ok()?.event())
                        .collect();
                    board.publish(&events);
                }
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    if let Ok(done) = &outcome {
                        log_done(done);
                    }
                    // A poster that went away no longer needs its answer; what
                    // it asked for is done and broadcast all the same.
                    let _ = reply.send(outcome.map_err(refusal));
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

/// The next job, tidying the store while none is waiting: between batches,
/// not inside them, so a post waits for at most one step.
fn next_job(
    log: &dyn Log,
    queue: &mut mpsc::Receiver<Job>,
    clock: &tokio::runtime::Runtime,
) -> Option<Job> {
    loop {
        if !queue.is_empty() {
            return queue.blocking_recv();
        }
        match log.tidy() {
            Ok(Tidy::More) => {}
            Ok(Tidy::Done) => return queue.blocking_recv(),
            Ok(Tidy::After(wait)) => {
                // The timer is made inside the runtime that drives it.
                let waited =
                    clock.block_on(async { tokio::time::timeout(wait, queue.recv()).await });
                if let Ok(job) = waited {
                    return job;
                }
            }
            Err(error) => {
                log::warn!("housekeeping of the store failed: {error}");
                return queue.blocking_recv();
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
    struct PanicsOnce {
        log: MemoryLog,
        panicked: AtomicBool,
    }

    impl Log for PanicsOnce {
        fn commit(&self, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError> {
            if !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("the store broke");
            }
            self.log.commit(ops, time)
        }
        fn changes(&self, id: u64, limit: usize) -> Result<Vec<crate::store::Event>, StoreError> {
            self.log.changes(id, limit)
        }
        fn operator_secret(&self, fresh: &str) -> Result<String, StoreError> {
            self.log.operator_secret(fresh)
        }
        fn rotate_operator_secret(&self, fresh: &str) -> Result<(), StoreError> {
            self.log.rotate_operator_secret(fresh)
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
        fn search(
            &self,
            query: &crate::search::Query,
            before: u64,
            limit: usize,
        ) -> Result<crate::search::Found, StoreError> {
            self.log.search(query, before, limit)
        }
        fn describe(&self) -> String {
            "a log that panics once".into()
        }
        fn files(&self) -> &dyn crate::store::FileStore {
            self.log.files()
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
        let (writer, board) = start(Arc::new(PanicsOnce {
            log: MemoryLog::new().unwrap(),
            panicked: AtomicBool::new(false),
        }));
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
        let (writer, _board) = start(Arc::new(MemoryLog::new().unwrap()));
        let mut running = writer.running.clone();
        drop(writer);
        let ended = tokio::time::timeout(Duration::from_secs(5), running.changed()).await;
        assert!(matches!(ended, Ok(Err(_))), "the thread ended: {ended:?}");
    }
}
