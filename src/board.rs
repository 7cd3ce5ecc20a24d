//! The hub: the window of recent messages, the connected subscribers, and the
//! fan-out between them.
//!
//! Everything that must happen in one order happens under one
//! `parking_lot::Mutex`: a message enters the window and is queued to every
//! subscriber in the same critical section, and a new subscriber is added and
//! handed its snapshot in another, so every client sees the same order and a
//! reconnecting client neither misses nor repeats a message. The lock is never
//! held across an `.await` or any I/O: queuing is a `try_send` of a shared,
//! already serialised frame, which is why a plain sync mutex is right here.
//!
//! Messages enter, change and go only through [`Board::publish`], called
//! once the store has committed them: by the writer thread when this process is the store's only
//! writer (see `writer.rs`), or by the store's tail when several processes
//! share it (see `store/redis.rs`), which sees the board only as the
//! [`Follower`] it implements here. Either way in the board's one order. The
//! board reads its [`Log`] for history older than its window and never
//! writes to it.
//!
//! Edits and deletions take ids from the same counter as posts: the window
//! holds each message in its current form (a deleted one leaves it), and the
//! hub keeps the latest change of each recently changed message, so a
//! client resuming with `?since=` learns, in the same critical section as
//! it subscribes, what changed among the messages it already has.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::mailbox::{Bounds, Mailbox, Taken};
use crate::protocol::{self, Message};
use crate::search::Query;
use crate::store::{Event, Follower, Log, StoreError};
use crate::ws;

/// One message as the board keeps it: its id and its `message-added` frame,
/// as the WebSocket frame every connection writes and as the text inside it
/// (one allocation, two views).
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    frame: ByteString,
    wire: Bytes,
}

impl Entry {
    pub fn new(message: &Message) -> Entry {
        let text = protocol::message_added_frame(message);
        let len = text.len();
        let wire = ws::text(text);
        // The frame ends with its payload, the String just encoded: valid UTF-8.
        let frame = ByteString::try_from(wire.slice(wire.len() - len..))
            .expect("a text frame's payload is the text it was made from");
        Entry {
            id: message.id,
            frame,
            wire,
        }
    }

    /// The message's own JSON, sliced out of the frame.
    pub fn json(&self) -> &str {
        &self.frame[protocol::MESSAGE_ADDED_PREFIX.len()..self.frame.len() - 1]
    }
}

const RESET_MESSAGE: &str =
    "The board's history was lost on the server and has started over; reload to see it.";

/// What a connection's queue carries: WebSocket frames to send in order,
/// encoded once for everyone (a server's frames are the same bytes for every
/// client). Messages committed together travel as one item, shared by every
/// connection, so a burst costs each connection one queue operation and one
/// wake-up, not one per message.
pub type Outgoing = Arc<[Bytes]>;

/// A message in its context ([`Board::around`]): the page, oldest first, and
/// whether messages were left out before it and after it.
#[derive(Debug)]
pub struct Around {
    pub page: Vec<Arc<Entry>>,
    pub older: bool,
    pub newer: bool,
}

/// Sizes that shape the board's memory and behaviour.
#[derive(Debug, Clone, Copy)]
pub struct BoardConfig {
    /// Messages a new client receives in `messages-available`.
    pub history: usize,
    /// Messages kept in memory; at least `history`.
    pub window: usize,
    /// Most messages a resuming client (`?since=`) receives at once.
    pub resume_cap: usize,
    /// Most bytes of message JSON in one catch-up answer (a welcome, an
    /// `older-messages` page, an HTTP page), whatever the counts allow; one
    /// message always goes out (see [`protocol::CATCH_UP_BYTES`]).
    pub catch_up_bytes: usize,
    /// Items (batches of frames) queued for one connection before it counts
    /// as too slow.
    pub queue: usize,
    /// Bytes of frames queued for one connection before it counts as too
    /// slow: what bounds the memory a client that stopped reading can hold.
    pub queue_bytes: usize,
    /// How long presence changes are gathered before one `presence` frame goes out.
    pub presence_delay: Duration,
}

impl BoardConfig {
    pub fn with_history(history: usize) -> BoardConfig {
        BoardConfig {
            history,
            window: history.max(1000),
            resume_cap: history.max(5000),
            catch_up_bytes: protocol::CATCH_UP_BYTES,
            // A client is cut off when its queue holds 4 MiB of frames (tens
            // of thousands of ordinary messages): far more than a browser
            // tab reading in bursts, or a saturated server running behind,
            // ever leaves queued, and a bounded cost for one that stopped
            // reading. The item count is only a second guard.
            queue: 16_384,
            queue_bytes: 4 << 20,
            presence_delay: Duration::from_millis(100),
        }
    }
}

/// The longest presence changes are gathered before a frame goes out.
pub const PRESENCE_MOST_GATHER: Duration = Duration::from_secs(4);

/// How long to gather presence changes, given the last wait `gather`, the
/// time `since_sent` since the last frame went out (measured when the next
/// change comes), the `shortest` wait, and `online` connections: twice the
/// last wait while changes keep coming (within twice that wait of the last
/// frame), the shortest after a quiet spell, and at least half a
/// millisecond per connection; never more than [`PRESENCE_MOST_GATHER`].
fn presence_gather(
    gather: Duration,
    since_sent: Duration,
    shortest: Duration,
    online: usize,
) -> Duration {
    let by_time = if since_sent > gather * 2 {
        shortest
    } else {
        gather * 2
    };
    let by_crowd = Duration::from_micros(online as u64 * 500);
    by_time
        .max(by_crowd)
        .max(shortest)
        .min(PRESENCE_MOST_GATHER)
}

/// A cheap-to-clone handle to the board.
#[derive(Clone)]
pub struct Board {
    shared: Arc<Shared>,
}

struct Shared {
    hub: Mutex<Hub>,
    log: Arc<dyn Log>,
    config: BoardConfig,
    closed: AtomicBool,
    presence_changed: Notify,
    /// Connections on the board's other nodes (a Redis board), as last reported.
    elsewhere: AtomicUsize,
}

struct Hub {
    /// The newest messages, oldest first, contiguous with the log's end.
    window: VecDeque<Arc<Entry>>,
    /// True while the window holds the whole history, so reads need no store.
    complete: bool,
    /// The last id published: a post's or a change's.
    last_id: u64,
    /// The latest change of each message changed after `changes_from`, in
    /// change order: what a client resuming after `changes_from` needs.
    changes: VecDeque<Change>,
    /// Every change after this id is in `changes`; before it, in the store.
    changes_from: u64,
    /// The history's epoch, for a store that can lose its history and begin
    /// anew (Redis): sent in `messages-available`, so a client resuming with
    /// an older one learns that what it shows is gone. Kept beside the window
    /// it labels, so a new client never gets one window with another's epoch.
    epoch: Option<String>,
    subscribers: HashMap<u64, Subscriber>,
    next_subscriber: u64,
}

/// A message's latest change, as the frame a resuming client is sent.
struct Change {
    change: u64,
    id: u64,
    frame: Arc<str>,
}

/// The hub's end of a subscription.
struct Subscriber {
    mailbox: Arc<Mailbox>,
}

impl Drop for Subscriber {
    /// A connection the board forgets gets no more frames: it writes what
    /// its mailbox holds, then closes.
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// A connection's place on the board. Dropping it forgets the connection at once.
pub struct Subscription {
    id: u64,
    board: Board,
    /// Frames for this connection, in board order. It ends when the board
    /// closes or when the connection fell too far behind and was cut off.
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// Waits for board frames and takes the oldest batches queued, up to
    /// about `frames` frames; `None` once no more will come.
    pub async fn take(&self, frames: usize) -> Option<Taken> {
        self.mailbox.take(frames).await
    }

    /// Records that a batch taken before has been written to the socket.
    pub fn written(&self, taken: &Taken) {
        self.mailbox.written(taken.bytes);
    }
}

fn item_bytes(item: &Outgoing) -> usize {
    item.iter().map(|frame| frame.len()).sum()
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.board.unsubscribe(self.id);
    }
}

impl Board {
    /// Opens the board on `log`, loading the newest messages (and the
    /// history's epoch) into the window.
    pub fn open(log: Arc<dyn Log>, config: BoardConfig) -> Result<Board, StoreError> {
        let window_len = config.window.max(config.history);
        let recent = log.before(u64::MAX, window_len)?;
        let last_id = log.last_id()?;
        // A store with fewer messages than the window holds them all, even
        // when edits and deletions have taken ids beyond the newest.
        let epoch = log.epoch();
        let complete = recent.len() < window_len;
        let board = Board {
            shared: Arc::new(Shared {
                hub: Mutex::new(Hub {
                    window: recent.iter().map(|m| Arc::new(Entry::new(m))).collect(),
                    complete,
                    last_id,
                    changes: VecDeque::new(),
                    changes_from: last_id,
                    epoch,
                    subscribers: HashMap::new(),
                    next_subscriber: 0,
                }),
                log,
                config: BoardConfig {
                    window: window_len,
                    ..config
                },
                closed: AtomicBool::new(false),
                presence_changed: Notify::new(),
                elsewhere: AtomicUsize::new(0),
            }),
        };
        Ok(board)
    }

    pub fn config(&self) -> &BoardConfig {
        &self.shared.config
    }

    /// Applies committed events, in the board's order, to the window and
    /// queues each one's frame to every subscriber. Called only by the
    /// store's feed (the writer thread or the store's tail), which delivers
    /// in order, so all subscribers see one order.
    pub fn publish<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let events: Vec<&Event> = events.into_iter().collect();
        // Frames are built before the lock is taken.
        let built: Vec<Built> = events.iter().map(|event| Built::new(event)).collect();
        let item: Outgoing = built.iter().map(|b| b.wire()).collect();
        let window = self.shared.config.window;
        let mut hub = self.shared.hub.lock();
        for (event, built) in events.into_iter().zip(built) {
            hub.last_id = hub.last_id.max(event.position());
            match built {
                Built::Posted(entry) => {
                    hub.window.push_back(entry);
                    if hub.window.len() > window {
                        hub.window.pop_front();
                        hub.complete = false;
                    }
                }
                Built::Changed {
                    id,
                    change,
                    entry,
                    frame,
                    ..
                } => {
                    if let Ok(at) = hub.window.binary_search_by_key(&id, |e| e.id) {
                        match entry {
                            Some(entry) => hub.window[at] = entry,
                            None => {
                                hub.window.remove(at);
                            }
                        }
                    }
                    hub.changes.retain(|c| c.id != id);
                    hub.changes.push_back(Change { change, id, frame });
                    if hub.changes.len() > window {
                        if let Some(oldest) = hub.changes.pop_front() {
                            hub.changes_from = oldest.change;
                        }
                    }
                }
            }
        }
        self.broadcast(hub, &item);
    }

    /// Joins the board: returns the connection's subscription and its first
    /// frames: `messages-available` with the newest `history` messages, or
    /// with `since` every message after that id (at most `resume_cap`, and
    /// at most `catch_up_bytes` of them; beyond that the newest ones, flagged
    /// as a gap). A client resuming with an `epoch` the board no longer has
    /// gets `board-reset` first, and the newest messages instead of those
    /// after its `since`.
    ///
    /// Blocks when the window does not reach back to `since`, to read the
    /// store: call it from a blocking context.
    pub fn subscribe(
        &self,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(Subscription, Vec<String>), StoreError> {
        let config = self.shared.config;
        // Everything the window gives is read in the one critical section
        // that adds the subscriber and reads the epoch: a reset replaces
        // the window and the epoch together, so a newcomer gets the old
        // window with the old epoch or the new one with the new, and
        // messages newer than its snapshot are queued to it, never missed
        // or repeated.
        let (subscription, current, stale, since, mut budget, window, changes) = {
            let mut hub = self.shared.hub.lock();
            let current = hub.epoch.clone();
            let stale = matches!((epoch, &current), (Some(theirs), Some(ours)) if theirs != ours);
            let since = if stale { None } else { since };
            let (id, mailbox) = hub.add_subscriber();
            let subscription = Subscription {
                id,
                board: self.clone(),
                mailbox,
            };
            let count = match since {
                Some(_) => config.resume_cap,
                None => config.history,
            };
            let mut budget = Budget::new(count, config.catch_up_bytes);
            let window = newest_in_window(&hub, u64::MAX, since.unwrap_or(0), &mut budget);
            let changes = since.map(|since| ChangesRead {
                since,
                kept: hub
                    .changes
                    .iter()
                    .filter(|c| c.change > since && c.id <= since)
                    .map(|c| c.frame.clone())
                    .collect(),
                from: hub.changes_from,
            });
            (subscription, current, stale, since, budget, window, changes)
        };
        self.shared.presence_changed.notify_one();

        // What the window did not reach is older than it, and immutable in
        // the store, so this read cannot race with new messages.
        let (newest_first, cut) = self.newest_in_store(window, since.unwrap_or(0), &mut budget)?;
        // A new client pages back from whatever it got; only a resuming one
        // must learn that what it shows and what it got do not meet.
        let gap = since.is_some() && cut;
        // What changed among the messages a resuming client has. A client
        // told of a gap starts over from the newest messages, so it needs none.
        let changed = match changes {
            Some(changes) if !gap => self.changes_for(changes)?,
            _ => Some(Vec::new()),
        };
        let Some(changed) = changed else {
            // More changed while the client was away than is worth
            // replaying: it starts over from the newest messages, as after
            // a gap. The subscription stays: nothing newer is missed.
            let mut budget = Budget::new(config.history, config.catch_up_bytes);
            let (newest_first, _) = self.newest_below(u64::MAX, 0, &mut budget)?;
            let frame = protocol::messages_available_frame(
                newest_first.iter().rev().map(|e| e.json()),
                true,
                current.as_deref(),
            );
            return Ok((subscription, vec![frame]));
        };
        let frame = protocol::messages_available_frame(
            newest_first.iter().rev().map(|e| e.json()),
            gap,
            current.as_deref(),
        );
        let mut welcome = Vec::with_capacity(2 + changed.len());
        if stale {
            welcome.push(protocol::board_reset_frame(RESET_MESSAGE));
        }
        welcome.push(frame);
        welcome.extend(changed);
        Ok((subscription, welcome))
    }

    /// The `message-edited` and `message-deleted` frames a client resuming
    /// after `since` needs, in change order: the latest change of every
    /// message at or below `since` changed after it. Those the hub no
    /// longer keeps are read from the store; `None` when there are more
    /// than `resume_cap`.
    fn changes_for(&self, read: ChangesRead) -> Result<Option<Vec<String>>, StoreError> {
        let cap = self.shared.config.resume_cap;
        let mut frames = Vec::new();
        if read.since < read.from {
            // Changes up to `from` are in the store only. A message changed
            // again since is left to the hub's list (taken above) or to the
            // live feed (newer than the subscription): the store is read
            // after subscribing, so nothing falls between.
            let stored = self.shared.log.changes(read.since, cap + 1)?;
            // The read holds every change up to `from` when it stopped
            // short of its limit or went past `from`.
            let mut whole = stored.len() <= cap;
            for event in stored {
                if event.position() > read.from {
                    whole = true;
                    break;
                }
                match &event {
                    Event::Edited { message, change } if message.id <= read.since => {
                        frames.push(protocol::message_edited_frame(message, *change));
                    }
                    Event::Deleted { id, change } if *id <= read.since => {
                        frames.push(protocol::message_deleted_frame(*id, *change));
                    }
                    _ => {}
                }
            }
            if !whole {
                return Ok(None);
            }
        }
        if frames.len() + read.kept.len() > cap {
            return Ok(None);
        }
        frames.extend(read.kept.iter().map(|frame| frame.to_string()));
        Ok(Some(frames))
    }

    /// The newest messages with an id in `floor + 1 .. below`, newest first,
    /// as many as `budget` takes, and whether any in that range were left
    /// out. Reads the window, then the store behind it a page at a time, so
    /// no more than about one budget of messages is ever in memory.
    fn newest_below(
        &self,
        below: u64,
        floor: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        let window = newest_in_window(&self.shared.hub.lock(), below, floor, budget);
        self.newest_in_store(window, floor, budget)
    }

    /// Goes on from what the window gave, reading older messages from the
    /// store a page at a time while `budget` takes them.
    fn newest_in_store(
        &self,
        window: WindowRead,
        floor: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        let (mut page, mut below) = match window {
            WindowRead::Done { page, cut } => return Ok((page, cut)),
            WindowRead::Older { page, below } => (page, below),
        };
        loop {
            let wanted = budget.next_read();
            let older = self.shared.log.before(below, wanted)?;
            for message in older.iter().rev() {
                if message.id <= floor {
                    return Ok((page, false));
                }
                let entry = Entry::new(message);
                if !budget.take(entry.json().len()) {
                    return Ok((page, true));
                }
                page.push(Arc::new(entry));
            }
            match older.first() {
                Some(oldest) if older.len() == wanted => below = oldest.id,
                // Fewer than asked for: the history begins here.
                _ => return Ok((page, false)),
            }
        }
    }

    fn unsubscribe(&self, id: u64) {
        if self.shared.hub.lock().subscribers.remove(&id).is_some() {
            self.shared.presence_changed.notify_one();
        }
    }

    /// How many connections are on the board now, on every node.
    pub fn online(&self) -> usize {
        self.local_online() + self.shared.elsewhere.load(Ordering::Relaxed)
    }

    /// How many connections this process serves.
    pub fn local_online(&self) -> usize {
        self.shared.hub.lock().subscribers.len()
    }

    /// Records how many connections the board's other nodes serve.
    pub fn set_elsewhere(&self, count: usize) {
        if self.shared.elsewhere.swap(count, Ordering::Relaxed) != count {
            self.shared.presence_changed.notify_one();
        }
    }

    /// The id of the newest message published.
    pub fn last_id(&self) -> u64 {
        self.shared.hub.lock().last_id
    }

    /// Starts over after the store lost the history: the window becomes
    /// `recent` (the newest messages of the new history, oldest first) and
    /// every connection is told with `board-reset` that what it shows is gone.
    pub fn reset(&self, recent: &[Message], epoch: Option<String>) {
        let item: Outgoing = Arc::new([ws::text(protocol::board_reset_frame(RESET_MESSAGE))]);
        let mut hub = self.shared.hub.lock();
        hub.epoch = epoch;
        hub.window = recent.iter().map(|m| Arc::new(Entry::new(m))).collect();
        hub.complete = recent.len() < self.shared.config.window;
        hub.last_id = recent.last().map_or(0, |m| m.id);
        hub.changes.clear();
        hub.changes_from = hub.last_id;
        self.broadcast(hub, &item);
    }

    /// Up to `limit` messages after `since`, oldest first, and no more than
    /// `catch_up_bytes` of them (the HTTP API's forward paging), and whether
    /// newer ones follow. Blocks when the store must be read.
    pub fn after(&self, since: u64, limit: usize) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        let mut budget = Budget::new(limit, self.shared.config.catch_up_bytes);
        self.oldest_above(since, &mut budget)
    }

    /// The oldest messages with an id above `since`, oldest first, as many
    /// as `budget` takes, and whether newer ones were left out. Reads the
    /// window when it reaches back to `since`, else the store a page at a
    /// time.
    fn oldest_above(
        &self,
        since: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        let mut page = Vec::new();
        {
            let hub = self.shared.hub.lock();
            let start = hub.window.partition_point(|e| e.id <= since);
            if hub.complete || start > 0 {
                for entry in hub.window.range(start..) {
                    if !budget.take(entry.json().len()) {
                        return Ok((page, true));
                    }
                    page.push(entry.clone());
                }
                return Ok((page, false));
            }
        }
        let mut since = since;
        loop {
            let wanted = budget.next_read();
            let newer = self.shared.log.after(since, wanted)?;
            for message in &newer {
                let entry = Entry::new(message);
                if !budget.take(entry.json().len()) {
                    return Ok((page, true));
                }
                page.push(Arc::new(entry));
            }
            match newer.last() {
                Some(newest) if newer.len() == wanted => since = newest.id,
                _ => return Ok((page, false)),
            }
        }
    }

    /// Message `id` in its context: up to `limit` messages before it, the
    /// message itself unless it was deleted, and up to `limit` after it,
    /// oldest first and no more than `catch_up_bytes` of them all; and
    /// whether older ones, and newer ones, were left out. The message and
    /// the newer side may take half of the bytes, the older side the rest,
    /// so a page of long messages still shows both sides. Blocks when the
    /// store must be read.
    pub fn around(&self, id: u64, limit: usize) -> Result<Around, StoreError> {
        let bytes = self.shared.config.catch_up_bytes;
        // From `id` on: the message itself first, when it is there, which
        // is why this side may take one more.
        let mut newer_budget = Budget::new(limit + 1, bytes / 2);
        let (mut newer, mut newer_left) =
            self.oldest_above(id.saturating_sub(1), &mut newer_budget)?;
        if newer.first().is_none_or(|e| e.id != id) && newer.len() > limit {
            // Deleted: the one more was a neighbour too many.
            newer.pop();
            newer_left = true;
        }
        // The answer's one message that always goes out may be in it already.
        let mut older_budget = Budget::new(limit, bytes.saturating_sub(newer_budget.taken_bytes))
            .sharing(!newer.is_empty());
        let (mut page, older_left) = self.newest_below(id, 0, &mut older_budget)?;
        page.reverse();
        page.extend(newer);
        Ok(Around {
            page,
            older: older_left,
            newer: newer_left,
        })
    }

    /// The newest `limit` messages before `before`, no more than
    /// `catch_up_bytes` of them, oldest first, and whether there are older
    /// ones still. Blocks when the store must be read.
    pub fn before(&self, before: u64, limit: usize) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        let mut budget = Budget::new(limit, self.shared.config.catch_up_bytes);
        let (mut page, more) = self.newest_below(before, 0, &mut budget)?;
        page.reverse();
        Ok((page, more))
    }

    /// The JSON of the newest (up to) `limit` messages below `before` that
    /// match `query`, newest first, with their highlights (see `search`);
    /// no more than `catch_up_bytes` of them. True when older ones match too.
    pub fn search(
        &self,
        query: &Query,
        before: u64,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let found = self.shared.log.search(query, before, limit)?;
        let mut budget = Budget::new(limit, self.shared.config.catch_up_bytes);
        let mut page = Vec::with_capacity(found.hits.len());
        for hit in &found.hits {
            let json = serde_json::to_string(hit).expect("a hit is plain data");
            if !budget.take(json.len()) {
                return Ok((page, true));
            }
            page.push(json);
        }
        Ok((page, found.more))
    }

    /// The newest `limit` messages (no more than `catch_up_bytes`), oldest
    /// first, and whether there are older ones.
    pub fn latest(&self, limit: usize) -> Result<(Vec<Arc<Entry>>, bool), StoreError> {
        self.before(u64::MAX, limit)
    }

    /// Sends a `presence` frame to everyone whenever the number of
    /// connections changed, gathering changes first so that a crowd costs
    /// each connection a handful of frames, not one per newcomer.
    ///
    /// Two things stretch the gathering, from `presence_delay` up to
    /// [`PRESENCE_MOST_GATHER`]: time, as each frame sent while changes keep
    /// coming doubles the next wait (a quiet spell starts again from the
    /// shortest), and the crowd, half a millisecond per connection online.
    /// A hall of 20,000 phones joining over five seconds then gets about
    /// six frames; a change on a quiet board still shows within 100 ms.
    pub async fn run_presence(self) {
        let shortest = self.shared.config.presence_delay;
        let mut last_sent = None;
        let mut gather = shortest;
        let mut sent_at = tokio::time::Instant::now();
        while !self.is_closed() {
            self.shared.presence_changed.notified().await;
            gather = presence_gather(gather, sent_at.elapsed(), shortest, self.online());
            tokio::time::sleep(gather).await;
            let hub = self.shared.hub.lock();
            let online = hub.subscribers.len() + self.shared.elsewhere.load(Ordering::Relaxed);
            if last_sent == Some(online) {
                continue;
            }
            last_sent = Some(online);
            let item: Outgoing = Arc::new([ws::text(protocol::presence_frame(online))]);
            self.broadcast(hub, &item);
            sent_at = tokio::time::Instant::now();
        }
    }

    /// Queues `item` to every subscriber, then lets go of the hub; the
    /// presence count goes out again when that cut off slow connections.
    fn broadcast(&self, mut hub: MutexGuard<'_, Hub>, item: &Outgoing) {
        let config = &self.shared.config;
        let bounds = Bounds {
            items: config.queue,
            bytes: config.queue_bytes,
        };
        let dropped = hub.send_to_all(item, bounds);
        drop(hub);
        if dropped > 0 {
            self.shared.presence_changed.notify_one();
        }
    }

    /// Closes the board: every subscription's frame queue ends, so each
    /// connection sends its close frame and finishes.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.hub.lock().subscribers.clear();
        self.shared.presence_changed.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

/// What the tail of a shared store sees of the board.
impl Follower for Board {
    fn publish(&self, events: &[Event]) {
        Board::publish(self, events);
    }

    fn reset(&self, recent: &[Message], epoch: String) {
        Board::reset(self, recent, Some(epoch));
    }

    fn window(&self) -> usize {
        self.shared.config.window
    }

    fn last_id(&self) -> u64 {
        Board::last_id(self)
    }

    fn local_online(&self) -> usize {
        Board::local_online(self)
    }

    fn set_elsewhere(&self, count: usize) {
        Board::set_elsewhere(self, count);
    }

    fn is_closed(&self) -> bool {
        Board::is_closed(self)
    }
}

/// An event's frames, built before the hub's lock is taken.
enum Built {
    Posted(Arc<Entry>),
    Changed {
        id: u64,
        change: u64,
        /// The message in its new form, `None` once deleted.
        entry: Option<Arc<Entry>>,
        frame: Arc<str>,
        wire: Bytes,
    },
}

impl Built {
    fn new(event: &Event) -> Built {
        let (id, change, entry, frame) = match event {
            Event::Posted(message) => return Built::Posted(Arc::new(Entry::new(message))),
            Event::Edited { message, change } => (
                message.id,
                *change,
                Some(Arc::new(Entry::new(message))),
                protocol::message_edited_frame(message, *change),
            ),
            Event::Deleted { id, change } => (
                *id,
                *change,
                None,
                protocol::message_deleted_frame(*id, *change),
            ),
        };
        let frame: Arc<str> = frame.into();
        Built::Changed {
            id,
            change,
            entry,
            wire: ws::text(frame.to_string()),
            frame,
        }
    }

    /// The WebSocket frame every subscriber is sent.
    fn wire(&self) -> Bytes {
        match self {
            Built::Posted(entry) => entry.wire.clone(),
            Built::Changed { wire, .. } => wire.clone(),
        }
    }
}

/// What a resuming client's changes are read from: the frames the hub
/// kept for it, and the id before which the store must be asked.
struct ChangesRead {
    since: u64,
    kept: Vec<Arc<str>>,
    from: u64,
}

/// What one catch-up answer may still take: a count of messages and bytes
/// of their JSON. The first message is always taken, so a message larger
/// than the budget still reaches its readers, alone.
struct Budget {
    messages: usize,
    bytes: usize,
    taken: usize,
    taken_bytes: usize,
    /// The answer holds a message from another budget already, so this one
    /// has no first message to take whatever its size.
    shared: bool,
}

/// Bounds of one store read while filling a budget: the first read, of
/// unknown sizes, is small; later ones are sized by the average so far,
/// which a board of one-line messages would otherwise make thousands.
const FIRST_READ: usize = 64;
const LARGEST_READ: usize = 1024;

impl Budget {
    fn new(messages: usize, bytes: usize) -> Budget {
        Budget {
            messages,
            bytes,
            taken: 0,
            taken_bytes: 0,
            shared: false,
        }
    }

    /// The budget of one part of an answer: when `shared`, another part
    /// holds messages already, so the first message of this one must fit
    /// too.
    fn sharing(self, shared: bool) -> Budget {
        Budget { shared, ..self }
    }

    /// Takes a message whose JSON is `len` bytes, if it fits.
    fn take(&mut self, len: usize) -> bool {
        // The comma that joins it to the others.
        let cost = len + 1;
        let first = self.taken == 0 && !self.shared;
        let full = self.taken == self.messages || (!first && self.taken_bytes + cost > self.bytes);
        if !full {
            self.taken += 1;
            self.taken_bytes += cost;
        }
        !full
    }

    /// How many messages to read from the store next: what the rest of the
    /// budget holds at the average size taken so far, and one more, so the
    /// read also tells whether anything is left out.
    fn next_read(&self) -> usize {
        let left = self.messages - self.taken;
        let estimate = match self.taken_bytes.checked_div(self.taken) {
            Some(average) => self.bytes.saturating_sub(self.taken_bytes) / average.max(1),
            None => FIRST_READ,
        };
        estimate.clamp(1, LARGEST_READ).min(left) + 1
    }
}

/// What the window gave of a catch-up read, newest first.
enum WindowRead {
    /// The read is complete; `cut` when the budget left some out.
    Done { page: Vec<Arc<Entry>>, cut: bool },
    /// The window ran out: messages below `below` are in the store only.
    Older { page: Vec<Arc<Entry>>, below: u64 },
}

/// The newest messages of the window with an id in `floor + 1 .. below`,
/// as many as `budget` takes.
fn newest_in_window(hub: &Hub, below: u64, floor: u64, budget: &mut Budget) -> WindowRead {
    let mut page = Vec::new();
    let end = hub.window.partition_point(|e| e.id < below);
    for entry in hub.window.range(..end).rev() {
        if entry.id <= floor {
            return WindowRead::Done { page, cut: false };
        }
        if !budget.take(entry.json().len()) {
            return WindowRead::Done { page, cut: true };
        }
        page.push(entry.clone());
    }
    if hub.complete {
        return WindowRead::Done { page, cut: false };
    }
    let below = hub.window.front().map_or(below, |e| e.id.min(below));
    WindowRead::Older { page, below }
}

impl Hub {
    fn add_subscriber(&mut self) -> (u64, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox::default());
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        self.subscribers.insert(
            id,
            Subscriber {
                mailbox: mailbox.clone(),
            },
        );
        (id, mailbox)
    }

    /// Queues `item` to every subscriber and returns how many were dropped:
    /// one whose mailbox is past `bounds` has stopped reading, and waiting
    /// for it would stall everyone else, so it is cut off (its client
    /// reconnects with `?since=` and loses nothing).
    fn send_to_all(&mut self, item: &Outgoing, bounds: Bounds) -> usize {
        let bytes = item_bytes(item);
        let before = self.subscribers.len();
        self.subscribers.retain(|id, subscriber| {
            let sent = subscriber.mailbox.put(item, bytes, bounds);
            if !sent {
                log::info!("connection {id} is too slow to keep up; disconnecting it");
            }
            sent
        });
        before - self.subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryLog;

    fn board() -> Board {
        Board::open(
            Arc::new(MemoryLog::new().unwrap()),
            BoardConfig::with_history(10),
        )
        .expect("a memory log always opens")
    }

    /// The times of the presence frames `run_presence` sends while `joining`
    /// connections arrive evenly over `over` on a board that had been quiet,
    /// simulated with [`presence_gather`].
    fn presence_frames_during_a_join(joining: usize, over: Duration) -> Vec<Duration> {
        let shortest = BoardConfig::with_history(10).presence_delay;
        let online_at = |t: Duration| {
            (joining as f64 * (t.as_secs_f64() / over.as_secs_f64()).min(1.0)) as usize
        };
        // The first newcomer comes after an hour of quiet; the next ones
        // right after each frame, until the join is over.
        let mut since_sent = Duration::from_secs(3600);
        let (mut now, mut gather) = (Duration::ZERO, shortest);
        let mut frames = Vec::new();
        while now < over {
            gather = presence_gather(gather, since_sent, shortest, online_at(now));
            now += gather;
            frames.push(now);
            since_sent = Duration::ZERO;
        }
        frames
    }

    #[test]
    fn a_hall_joining_costs_each_connection_a_handful_of_presence_frames() {
        let frames = presence_frames_during_a_join(20_000, Duration::from_secs(5));
        assert!(frames.len() <= 7, "{frames:?}");
        let frames = presence_frames_during_a_join(20_000, Duration::from_secs(16));
        assert!(frames.len() <= 10, "{frames:?}");
        // However long a join, at most one frame per longest gathering.
        let frames = presence_frames_during_a_join(20_000, Duration::from_secs(60));
        assert!(frames.len() <= 6 + 60 / 4, "{frames:?}");
    }

    #[test]
    fn a_change_on_a_quiet_board_shows_within_the_shortest_delay() {
        let shortest = Duration::from_millis(100);
        let quiet = Duration::from_secs(10);
        let busy = PRESENCE_MOST_GATHER;
        assert_eq!(presence_gather(busy, quiet, shortest, 12), shortest);
        assert_eq!(presence_gather(shortest, quiet, shortest, 12), shortest);
    }

    #[test]
    fn presence_gathers_longer_while_changes_keep_coming_and_in_a_crowd() {
        let shortest = Duration::from_millis(100);
        let soon = Duration::from_millis(50);
        assert_eq!(presence_gather(shortest, soon, shortest, 12), 2 * shortest);
        assert_eq!(
            presence_gather(shortest, Duration::from_secs(60), shortest, 4_000),
            Duration::from_secs(2)
        );
        assert_eq!(
            presence_gather(PRESENCE_MOST_GATHER, soon, shortest, 12),
            PRESENCE_MOST_GATHER
        );
        assert_eq!(
            presence_gather(shortest, soon, shortest, 1_000_000),
            PRESENCE_MOST_GATHER
        );
    }

    /// `recent` messages all named `name`, as a new history after a reset.
    fn history(name: &str, count: u64) -> Vec<Message> {
        (1..=count)
            .map(|id| Message {
                id,
                name: name.into(),
                message: format!("message {id}"),
                time: 0,
                edited: None,
                files: Vec::new(),
            })
            .collect()
    }

    /// The epoch of a `messages-available` frame and the names in it.
    fn welcome(frame: &str) -> (Option<String>, Vec<String>) {
        let frame: serde_json::Value = serde_json::from_str(frame).expect("frames are JSON");
        assert_eq!(frame["event"], "messages-available");
        let names = frame["data"]
            .as_array()
            .expect("the data is a list of messages")
            .iter()
            .map(|m| m["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        (frame["epoch"].as_str().map(str::to_owned), names)
    }

    #[test]
    fn a_client_with_the_old_epoch_gets_a_reset_and_the_new_window_with_the_new_epoch() {
        let board = board();
        board.reset(&history("b", 2), Some("b".into()));
        let (_subscription, frames) = board.subscribe(Some(7), Some("a")).unwrap();
        assert!(frames[0].contains("board-reset"), "{frames:?}");
        assert_eq!(welcome(&frames[1]), (Some("b".into()), vec!["b".into(); 2]));
    }

    #[test]
    fn a_client_joining_during_resets_never_gets_one_window_with_another_epoch() {
        let board = board();
        board.reset(&history("a", 3), Some("a".into()));
        let resetting = {
            let board = board.clone();
            std::thread::spawn(move || {
                for round in 0..20_000 {
                    let epoch = if round % 2 == 0 { "b" } else { "a" };
                    board.reset(&history(epoch, 3), Some(epoch.into()));
                }
            })
        };
        while !resetting.is_finished() {
            let (_subscription, frames) = board.subscribe(None, None).unwrap();
            // Cheaper than parsing, so more joins land amid the resets.
            let labelled_a = frames[0].ends_with(r#""epoch":"a"}"#);
            assert_eq!(
                labelled_a,
                frames[0].contains(r#""name":"a""#),
                "one window, another's epoch: {}",
                frames[0]
            );
        }
        let (_subscription, frames) = board.subscribe(None, None).unwrap();
        assert_eq!(welcome(&frames[0]), (Some("a".into()), vec!["a".into(); 3]));
        resetting.join().expect("the resetting thread ends");
    }

    #[test]
    fn a_budget_takes_a_first_message_larger_than_itself_and_nothing_after_it() {
        let mut budget = Budget::new(10, 100);
        assert!(budget.take(500));
        assert!(!budget.take(1));
    }

    #[test]
    fn a_budget_sharing_an_answer_takes_no_first_message_larger_than_itself() {
        let mut part = Budget::new(10, 100).sharing(true);
        assert!(!part.take(500));
        assert!(part.take(50));
    }

    #[test]
    fn a_budget_stops_at_its_count_or_its_bytes_whichever_comes_first() {
        let mut by_count = Budget::new(2, 1000);
        assert!(by_count.take(10) && by_count.take(10));
        assert!(!by_count.take(10));
        // Each message costs its JSON and a comma.
        let mut by_bytes = Budget::new(100, 30);
        assert!(by_bytes.take(9) && by_bytes.take(9) && by_bytes.take(9));
        assert!(!by_bytes.take(0));
    }

    /// A board on a memory log holding `posts` posts by key `KEY` and then
    /// the changes `before` (committed before the board opens, so it keeps
    /// none of them), with a resume cap of `cap`.
    fn board_with(
        posts: u64,
        before: Vec<crate::store::Op>,
        cap: usize,
    ) -> (Board, Arc<MemoryLog>) {
        let log = Arc::new(MemoryLog::new().unwrap());
        let drafts = (1..=posts)
            .map(|n| {
                crate::protocol::Draft::new(
                    "n",
                    &format!("m{n}"),
                    crate::cli::default_config().session.limits,
                )
                .unwrap()
                .with_key(Some(KEY.into()))
            })
            .collect();
        log.append(drafts, 1).unwrap();
        log.commit(before, 1).unwrap();
        let config = BoardConfig {
            resume_cap: cap,
            ..BoardConfig::with_history(10)
        };
        let board = Board::open(log.clone(), config).expect("a memory log always opens");
        (board, log)
    }

    const KEY: &str = "author-key-0123456789";

    /// Commits `ops` and publishes what they did, as the writer does.
    fn commit(board: &Board, log: &MemoryLog, ops: Vec<crate::store::Op>) {
        let events: Vec<Event> = log
            .commit(ops, 2)
            .unwrap()
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok()?.event())
            .collect();
        board.publish(&events);
    }

    fn events_of(frames: &[String]) -> Vec<(String, u64)> {
        frames
            .iter()
            .map(|frame| {
                let frame: serde_json::Value = serde_json::from_str(frame).unwrap();
                let data = &frame["data"];
                let at = data["change"].as_u64().unwrap_or(0);
                (frame["event"].as_str().unwrap().to_owned(), at)
            })
            .collect()
    }

    #[test]
    fn a_resume_gets_the_latest_change_of_each_message_it_has_from_the_hub_and_the_store() {
        use crate::store::Op;
        // Deleted before the board opened: in the store only.
        let deleted_before = vec![Op::Delete {
            id: 1,
            key: KEY.into(),
        }];
        let (board, log) = board_with(5, deleted_before, 100);
        // After: kept by the hub too. Message 2 changes twice; only its
        // latest change is sent.
        commit(
            &board,
            &log,
            vec![Op::Edit {
                id: 2,
                message: "x".into(),
                key: KEY.into(),
            }],
        );
        commit(
            &board,
            &log,
            vec![Op::Edit {
                id: 3,
                message: "y".into(),
                key: KEY.into(),
            }],
        );
        commit(
            &board,
            &log,
            vec![Op::Delete {
                id: 2,
                key: KEY.into(),
            }],
        );
        let (_subscription, frames) = board.subscribe(Some(5), None).unwrap();
        assert_eq!(
            events_of(&frames),
            [
                ("messages-available".to_owned(), 0),
                ("message-deleted".to_owned(), 6),
                ("message-edited".to_owned(), 8),
                ("message-deleted".to_owned(), 9),
            ]
        );
        // A client that has seen change 8 needs only what came after it.
        let (_subscription, frames) = board.subscribe(Some(8), None).unwrap();
        assert_eq!(events_of(&frames)[1..], [("message-deleted".to_owned(), 9)]);
    }

    #[test]
    fn a_resume_after_more_changes_than_the_cap_starts_over_from_the_newest_messages() {
        use crate::store::Op;
        let (board, log) = board_with(8, Vec::new(), 3);
        let deletions = (1..=4)
            .map(|id| Op::Delete {
                id,
                key: KEY.into(),
            })
            .collect();
        commit(&board, &log, deletions);
        let (_subscription, frames) = board.subscribe(Some(8), None).unwrap();
        assert_eq!(frames.len(), 1, "no change frames: {frames:?}");
        let frame: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(frame["gap"], true, "the client starts over");
        let ids: Vec<u64> = frame["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [5, 6, 7, 8], "the newest messages, as they are now");
    }

    #[test]
    fn store_reads_are_sized_by_what_the_budget_still_holds() {
        let mut budget = Budget::new(5000, 1 << 20);
        assert_eq!(budget.next_read(), FIRST_READ + 1);
        for _ in 0..64 {
            assert!(budget.take(4095));
        }
        assert_eq!(budget.next_read(), 192 + 1, "256 KiB taken, 768 KiB left");
        let mut nearly_counted = Budget::new(3, 1 << 20);
        assert!(nearly_counted.take(10) && nearly_counted.take(10));
        assert_eq!(
            nearly_counted.next_read(),
            2,
            "the last one and one to look past it"
        );
    }
}
