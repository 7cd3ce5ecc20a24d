//! [`MemoryLog`]: the history in memory only (`--memory`), lost on exit.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{check_import_order, Appended, Log, StoreError, CID_MEMORY_MS, CID_PRUNE_EVERY_MS};
use crate::protocol::{Draft, Message};

/// History in memory only, lost on exit (`--memory`).
#[derive(Default)]
pub struct MemoryLog {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    /// cid -> (id, time stored), forgotten after a day.
    cids: HashMap<String, (u64, i64)>,
    /// When cids older than a day were last swept out.
    cids_pruned_at: i64,
}

impl State {
    fn find(&self, id: u64) -> Option<&Message> {
        self.messages
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|at| &self.messages[at])
    }
}

impl Log for MemoryLog {
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError> {
        let mut state = self.state.write();
        if time - state.cids_pruned_at > CID_PRUNE_EVERY_MS {
            state
                .cids
                .retain(|_, (_, stored)| *stored > time - CID_MEMORY_MS);
            state.cids_pruned_at = time;
        }
        let mut last = state.messages.last().map_or(0, |m| m.id);
        let mut appended = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let earlier = draft
                .cid()
                .and_then(|cid| state.cids.get(cid))
                .filter(|&&(_, stored)| stored > time - CID_MEMORY_MS)
                .map(|&(id, _)| id);
            if let Some(original) = earlier.and_then(|id| state.find(id)) {
                appended.push(Appended::Repeat(original.clone()));
                continue;
            }
            last += 1;
            if let Some(cid) = draft.cid() {
                state.cids.insert(cid.to_owned(), (last, time));
            }
            let message = draft.into_message(last, time);
            state.messages.push(message.clone());
            appended.push(Appended::New(message));
        }
        Ok(appended)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = &self.state.read().messages;
        let start = messages.partition_point(|m| m.id <= id);
        Ok(messages[start..].iter().take(limit).cloned().collect())
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = &self.state.read().messages;
        let end = messages.partition_point(|m| m.id < id);
        Ok(messages[end.saturating_sub(limit)..end].to_vec())
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self.state.read().messages.last().map_or(0, |m| m.id))
    }

    fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        check_import_order(messages)?;
        let mut state = self.state.write();
        if !state.messages.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        state.messages = messages.to_vec();
        Ok(messages.len())
    }

    fn describe(&self) -> String {
        "memory only (lost when lanboard stops)".into()
    }
}
