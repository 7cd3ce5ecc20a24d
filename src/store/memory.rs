//! [`MemoryLog`]: the history in memory only (`--memory`), lost on exit.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{
    check_import_order, judge, Appended, Denied, Done, Event, Log, Op, Outcome, StoreError,
    CID_MEMORY_MS, CID_PRUNE_EVERY_MS,
};
use crate::protocol::Message;
use crate::search::{Found, Index, Query};

/// History in memory only, lost on exit (`--memory`).
pub struct MemoryLog {
    state: RwLock<State>,
    /// Written under the state's lock with every commit, so a search never
    /// sees what the messages no longer hold. In SQLite's temporary file,
    /// so a long board's index does not all sit in memory too.
    index: Index,
}

impl MemoryLog {
    pub fn new() -> Result<MemoryLog, StoreError> {
        Ok(MemoryLog {
            state: RwLock::default(),
            index: Index::temporary()?,
        })
    }
}

#[derive(Default)]
struct State {
    /// The messages not deleted, in id order.
    messages: Vec<Stored>,
    /// The last id given out, to a post or a change.
    last: u64,
    /// Message id -> its latest change and whether that was its deletion.
    changes: HashMap<u64, (u64, bool)>,
    /// cid -> (id, time stored), forgotten after a day.
    cids: HashMap<String, (u64, i64)>,
    /// When cids older than a day were last swept out.
    cids_pruned_at: i64,
    /// Sender address -> end of its block (ms).
    blocks: HashMap<String, i64>,
    operator: Option<String>,
}

/// A message and what only the store knows of it.
struct Stored {
    message: Message,
    key_hash: Option<String>,
    sender: Option<String>,
}

impl State {
    fn find(&self, id: u64) -> Option<usize> {
        self.messages
            .binary_search_by_key(&id, |s| s.message.id)
            .ok()
    }

    fn blocked(&self, sender: Option<&str>, time: i64) -> Option<i64> {
        sender
            .and_then(|sender| self.blocks.get(sender))
            .filter(|&&until| until > time)
            .copied()
    }

    fn apply(&mut self, op: Op, time: i64) -> Outcome {
        let operator = self.operator.clone().unwrap_or_default();
        if let Op::Post(draft) = op {
            let earlier = draft
                .cid()
                .and_then(|cid| self.cids.get(cid))
                .filter(|&&(_, stored)| stored > time - CID_MEMORY_MS)
                .map(|&(id, _)| id);
            if let Some(id) = earlier {
                return match self.find(id) {
                    Some(at) => Ok(Done::Posted(Appended::Repeat(
                        self.messages[at].message.clone(),
                    ))),
                    None => Err(Denied::NotFound),
                };
            }
            let by_operator = draft
                .key()
                .is_some_and(|key| super::same_secret(key, &operator));
            if let (Some(until), false) = (self.blocked(draft.sender(), time), by_operator) {
                return Err(Denied::Blocked { until });
            }
            self.last += 1;
            if let Some(cid) = draft.cid() {
                self.cids.insert(cid.to_owned(), (self.last, time));
            }
            let (key_hash, sender) = (draft.key_hash(), draft.sender().map(str::to_owned));
            let message = draft.into_message(self.last, time);
            self.messages.push(Stored {
                message: message.clone(),
                key_hash,
                sender,
            });
            return Ok(Done::Posted(Appended::New(message)));
        }
        let id = op.target().expect("posts are handled above");
        let found = self.find(id);
        let stored = found.map(|at| self.messages[at].key_hash.as_deref());
        let actor = judge(&op, stored, &operator)?;
        let at = found.expect("judge refuses a message that is not found");
        match op {
            Op::Edit { message, .. } => {
                self.last += 1;
                self.changes.insert(id, (self.last, false));
                let stored = &mut self.messages[at].message;
                stored.message = message;
                stored.edited = Some(time);
                Ok(Done::Edited {
                    message: stored.clone(),
                    change: self.last,
                })
            }
            Op::Delete { .. } => {
                self.last += 1;
                self.changes.insert(id, (self.last, true));
                self.messages.remove(at);
                Ok(Done::Deleted {
                    id,
                    change: self.last,
                    by: actor,
                })
            }
            Op::Block { minutes, .. } => {
                let sender = self.messages[at].sender.clone().ok_or(Denied::NotFound)?;
                let until = time + minutes as i64 * 60_000;
                self.blocks.insert(sender, until);
                Ok(Done::Blocked { id, until })
            }
            Op::Post(_) => unreachable!("posts are handled above"),
        }
    }
}

impl Log for MemoryLog {
    fn commit(&self, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError> {
        let mut state = self.state.write();
        if time - state.cids_pruned_at > CID_PRUNE_EVERY_MS {
            state
                .cids
                .retain(|_, (_, stored)| *stored > time - CID_MEMORY_MS);
            state.blocks.retain(|_, until| *until > time);
            state.cids_pruned_at = time;
        }
        let outcomes: Vec<Outcome> = ops.into_iter().map(|op| state.apply(op, time)).collect();
        let events: Vec<Event> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok().and_then(Done::event))
            .collect();
        if !events.is_empty() {
            self.index.apply(&events, state.last)?;
        }
        Ok(outcomes)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = &self.state.read().messages;
        let start = messages.partition_point(|s| s.message.id <= id);
        Ok(messages[start..]
            .iter()
            .take(limit)
            .map(|s| s.message.clone())
            .collect())
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = &self.state.read().messages;
        let end = messages.partition_point(|s| s.message.id < id);
        Ok(messages[end.saturating_sub(limit)..end]
            .iter()
            .map(|s| s.message.clone())
            .collect())
    }

    fn changes(&self, id: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let state = self.state.read();
        let mut changed: Vec<(u64, u64, bool)> = state
            .changes
            .iter()
            .filter(|(_, &(change, _))| change > id)
            .map(|(&message, &(change, deleted))| (change, message, deleted))
            .collect();
        changed.sort_unstable();
        Ok(changed
            .into_iter()
            .take(limit)
            .filter_map(|(change, id, deleted)| {
                if deleted {
                    return Some(Event::Deleted { id, change });
                }
                let at = state.find(id)?;
                Some(Event::Edited {
                    message: state.messages[at].message.clone(),
                    change,
                })
            })
            .collect())
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self.state.read().last)
    }

    fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        check_import_order(messages)?;
        let mut state = self.state.write();
        if state.last != 0 {
            return Err(StoreError::NotEmpty);
        }
        state.messages = messages
            .iter()
            .map(|message| Stored {
                message: message.clone(),
                key_hash: None,
                sender: None,
            })
            .collect();
        state.last = messages.last().map_or(0, |m| m.id);
        let events: Vec<Event> = messages.iter().cloned().map(Event::Posted).collect();
        self.index.apply(&events, state.last)?;
        Ok(messages.len())
    }

    fn search(&self, query: &Query, before: u64, limit: usize) -> Result<Found, StoreError> {
        self.index.find(query, before, limit)
    }

    fn describe(&self) -> String {
        "memory only (lost when lanboard stops)".into()
    }

    fn operator_secret(&self, fresh: &str) -> Result<String, StoreError> {
        Ok(self
            .state
            .write()
            .operator
            .get_or_insert_with(|| fresh.to_owned())
            .clone())
    }

    fn rotate_operator_secret(&self, fresh: &str) -> Result<(), StoreError> {
        self.state.write().operator = Some(fresh.to_owned());
        Ok(())
    }
}
