//! [`MemoryLog`]: the history in memory only (`--memory`), lost on exit,
//! and the board's files with it.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{
    check_import_order, judge, Appended, Denied, Done, Event, FileStore, Log, Op, Outcome,
    StoreError, Stored as StoredFile, UploadId, CID_MEMORY_MS, CID_PRUNE_EVERY_MS, PIECE_BYTES,
};
use crate::protocol::{File, Message};
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
    /// Stored files by id, and which messages carry each.
    files: HashMap<String, Kept>,
    /// Uploads in progress: their chunks and when they began.
    uploads: HashMap<u64, (Vec<Vec<u8>>, i64)>,
    next_upload: u64,
    /// Bytes of the stored files and the uploads in progress.
    files_bytes: u64,
}

/// A stored file: what messages show of it, its content, how many
/// messages carry it, and when it was last uploaded.
struct Kept {
    file: File,
    chunks: Vec<Vec<u8>>,
    carried_by: usize,
    time: i64,
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
            let files = draft
                .files()
                .iter()
                .map(|id| match self.files.get(id) {
                    Some(kept) => Ok(kept.file.clone()),
                    None => Err(Denied::UnknownFile { id: id.clone() }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            for file in &files {
                self.files
                    .get_mut(&file.id)
                    .expect("looked up above")
                    .carried_by += 1;
            }
            self.last += 1;
            if let Some(cid) = draft.cid() {
                self.cids.insert(cid.to_owned(), (self.last, time));
            }
            let (key_hash, sender) = (draft.key_hash(), draft.sender().map(str::to_owned));
            let message = draft.into_message(self.last, time, files);
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
                let deleted = self.messages.remove(at);
                for file in &deleted.message.files {
                    self.let_go(&file.id);
                }
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

impl State {
    /// One message fewer carries file `id`: the last one takes it along.
    fn let_go(&mut self, id: &str) {
        let Some(kept) = self.files.get_mut(id) else {
            return;
        };
        kept.carried_by = kept.carried_by.saturating_sub(1);
        if kept.carried_by == 0 {
            let size = kept.file.size;
            self.files.remove(id);
            self.files_bytes = self.files_bytes.saturating_sub(size);
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
        for message in messages {
            for file in &message.files {
                match state.files.get_mut(&file.id) {
                    Some(kept) => kept.carried_by += 1,
                    None => {
                        return Err(StoreError::MissingFile {
                            message: message.id,
                            id: file.id.clone(),
                        })
                    }
                }
            }
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
        let mut found = self.index.find(query, before, limit)?;
        // The index holds only what is searched: the files come from here.
        let state = self.state.read();
        for hit in &mut found.hits {
            if let Some(at) = state.find(hit.message.id) {
                hit.message.files = state.messages[at].message.files.clone();
            }
        }
        Ok(found)
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

    fn files(&self) -> &dyn FileStore {
        self
    }
}

fn dropped() -> StoreError {
    StoreError::Refused("the upload was dropped".into())
}

impl FileStore for MemoryLog {
    fn begin_upload(&self, time: i64) -> Result<UploadId, StoreError> {
        let mut state = self.state.write();
        state.next_upload += 1;
        let upload = state.next_upload;
        state.uploads.insert(upload, (Vec::new(), time));
        Ok(UploadId(upload))
    }

    fn write_chunk(
        &self,
        upload: UploadId,
        _seq: u32,
        bytes: &[u8],
        quota: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.state.write();
        let after = state.files_bytes.saturating_add(bytes.len() as u64);
        if after > quota {
            return Err(StoreError::FilesFull { quota });
        }
        let (chunks, _) = state.uploads.get_mut(&upload.0).ok_or_else(dropped)?;
        chunks.push(bytes.to_vec());
        state.files_bytes = after;
        Ok(())
    }

    fn finish_upload(
        &self,
        upload: UploadId,
        file: &File,
        time: i64,
    ) -> Result<StoredFile, StoreError> {
        let mut state = self.state.write();
        let (chunks, _) = state.uploads.remove(&upload.0).ok_or_else(dropped)?;
        if let Some(kept) = state.files.get_mut(&file.id) {
            if kept.carried_by == 0 {
                kept.time = time;
            }
            let existing = kept.file.clone();
            let staged: usize = chunks.iter().map(Vec::len).sum();
            state.files_bytes = state.files_bytes.saturating_sub(staged as u64);
            return Ok(StoredFile::Existing(existing));
        }
        state.files.insert(
            file.id.clone(),
            Kept {
                file: file.clone(),
                chunks,
                carried_by: 0,
                time,
            },
        );
        Ok(StoredFile::New(file.clone()))
    }

    fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError> {
        let mut state = self.state.write();
        if let Some((chunks, _)) = state.uploads.remove(&upload.0) {
            let staged: usize = chunks.iter().map(Vec::len).sum();
            state.files_bytes = state.files_bytes.saturating_sub(staged as u64);
        }
        Ok(())
    }

    fn file(&self, id: &str) -> Result<Option<File>, StoreError> {
        Ok(self
            .state
            .read()
            .files
            .get(id)
            .map(|kept| kept.file.clone()))
    }

    fn read_chunk(&self, id: &str, seq: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .state
            .read()
            .files
            .get(id)
            .and_then(|kept| kept.chunks.get(seq as usize).cloned()))
    }

    fn read_pieces(&self, id: &str, seq: u32) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        Ok(self.state.read().files.get(id).and_then(|kept| {
            let chunk = kept.chunks.get(seq as usize)?;
            Some(chunk.chunks(PIECE_BYTES).map(<[u8]>::to_vec).collect())
        }))
    }

    fn remove_orphans(&self, before: i64) -> Result<usize, StoreError> {
        let mut state = self.state.write();
        let orphans: Vec<String> = state
            .files
            .iter()
            .filter(|(_, kept)| kept.carried_by == 0 && kept.time < before)
            .map(|(id, _)| id.clone())
            .collect();
        let abandoned: Vec<u64> = state
            .uploads
            .iter()
            .filter(|(_, (_, began))| *began < before)
            .map(|(upload, _)| *upload)
            .collect();
        let mut freed = 0;
        for id in &orphans {
            freed += state.files.remove(id).map_or(0, |kept| kept.file.size);
        }
        for upload in abandoned {
            if let Some((chunks, _)) = state.uploads.remove(&upload) {
                freed += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            }
        }
        state.files_bytes = state.files_bytes.saturating_sub(freed);
        Ok(orphans.len())
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.state.read().files_bytes)
    }
}
