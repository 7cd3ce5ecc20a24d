//! [`RedisLog`]: the board in Redis (`--redis URL`), shared by any number of
//! lanboard processes ("nodes") started with the same URL and prefix.
//!
//! Keys, all under `--redis-prefix` (default `lanboard`):
//! - `P:messages`: a Stream, the board's one order, holding no text. Message
//!   `n` is entry `n-0` with the field `post`; an edit or deletion of message
//!   `m` with change id `c` is entry `c-0` with the field `edit` or `delete`
//!   set to `m`. A deletion also removes the message's own entry (`XDEL`).
//! - `P:message:<n>`: a hash, message `n` as it reads now: `name`, `message`,
//!   `time`, `edited` once edited, `key` (the author key's SHA-256),
//!   `sender` (its address, for blocks) when known, and `files` (the JSON
//!   list of the files it carries) when it has any. An edit overwrites it; a
//!   deletion deletes it. The text lives here and not in the stream because
//!   Redis keeps a removed stream entry's bytes inside its stream node (and
//!   writes them to its files) until every entry of that node is removed,
//!   while a deleted key is gone from Redis's data and, once Redis rewrites
//!   them, from its files. Boards written by lanboard before this layout have
//!   their posts' fields in the stream entry itself (`name`, `message`,
//!   `time`): they are still read, and the first edit moves the message to
//!   its hash.
//! - `P:changes`: a sorted set of message ids scored by their latest
//!   change, for clients resuming after it.
//! - `P:operator`: the operator secret.
//! - `P:block:<address>`: the end of a block (ms), expiring with it.
//! - `P:last-id`: the last id given out.
//! - `P:epoch`: a random token made when the board was created. If it
//!   vanishes, the board was lost (FLUSHALL, a restart without persistence).
//!   `P:epoch-born`: when, on Redis's clock.
//! - `P:cid:<cid>`: `"<id> <time>"` of the message posted with that client
//!   id, remembered for a day of message time and expiring after a day.
//! - `P:nodes` and `P:node:<node>`: each node's connection count, refreshed
//!   every second and expiring after a few, for presence across nodes.
//! - `P:secret`: a random key shared by the nodes for the login cookie.
//!
//! Files, so that every node serves every file (see [`FileStore`]):
//! - `P:file:<id>`: a hash, stored file `<id>` (its SHA-256): `name`, `size`,
//!   `type`, `refs` (how many messages carry it), `chunks` (how many), and
//!   `t<n>` for each chunk `n` that has a tail (below).
//! - `P:file:<id>:<n>`: chunk `n` ([`CHUNK_BYTES`]) but its last
//!   [`CHUNK_TAIL`] bytes, which are the field `t<n>` of the file's hash. A
//!   value of exactly 256 KiB plus the header of Redis's string passes
//!   jemalloc's 256 KiB size class and takes the next, 320 KiB; one a little
//!   shorter fits. Measured on Redis 7.0 (`MEMORY USAGE`): 328 006 bytes for
//!   a whole chunk, 262 280 for a split one; a 25 MiB file costs 1.0007
//!   bytes of Redis memory per byte, against 1.25 whole.
//! - `P:unreferenced-files`: a sorted set of the files no message carries,
//!   scored by their latest upload (ms): what [`FileStore::remove_orphans`]
//!   removes once old enough.
//! - `P:last-upload`: the last upload id given out.
//! - `P:uploads`: a sorted set of the uploads in progress, scored by when
//!   each began (ms); an upload not in it was finished, aborted or swept,
//!   and takes no more chunks.
//! - `P:upload:<n>` and `P:upload:<n>:<k>`: upload `n`'s hash (`bytes`,
//!   `chunks`, tails `t<k>`) and its chunks, laid out as a file's. The
//!   chunks expire after [`UPLOAD_TTL`], so that Redis drops what a board
//!   no node serves any more had in flight; the small hash stays until a
//!   sweep gives its bytes back. Finishing renames the chunks to the file's.
//! - `P:files-bytes`: bytes of the stored files and the uploads in
//!   progress, checked against `--max-files-bytes` by every chunk written.
//!
//! A post's files are checked and counted inside [`COMMIT`], and stored in
//! the message's hash as the JSON list messages show (`files`); a deletion
//! counts them down and removes each file no message carries any more, in
//! the same script, and asks for Redis's files to be rewritten as for any
//! deletion.
//!
//! Writes go through one Lua script run with EVALSHA ([`COMMIT`]): it checks
//! the epoch, answers repeated cids with the original, and gives each new
//! message the next id as its stream id, atomically, so id order is commit
//! order on every node. No node publishes from its write path: each one tails
//! the stream (`XREAD BLOCK` on its own connection) and publishes what it
//! reads back to its [`Follower`] ([`RedisLog::follow`], [`Feed::Tail`]), so
//! every client on every node sees one order.
//!
//! Search: every node keeps a search [`Index`] of its own (SQLite's
//! temporary file, or `--search-index PATH`), filled from the stream when
//! the node starts and then fed by the tail with each batch it reads, so a
//! caught-up index costs Redis nothing more. A search is answered from it,
//! then each hit is read again from Redis ([`FETCH`]): one that was deleted
//! or edited since the index last heard is left out, so no node ever shows
//! what the board no longer holds.
//!
//! Threading: the redis crate is async, and the [`Log`] methods block, so the
//! log owns a small tokio runtime; a blocking call hands its future to that
//! runtime and waits on a channel, which works from the writer thread,
//! actix's blocking pool and even (at startup) an async worker alike. A call
//! whose future panics, or that the runtime does not answer in time, fails
//! with [`StoreError::Unavailable`] instead of taking its caller down, and the
//! tail and presence tasks are restarted when they panic, so a fault in the
//! client costs some posts a `storage-unavailable`, never the node.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncCommands, Client, RedisError, Script};

use super::{
    check_import_order, random_token, Actor, Appended, Denied, Done, Event, Feed, FileStore,
    Follower, Log, Op, Outcome, StoreError, Stored, UploadId, CHUNK_BYTES, CID_MEMORY_MS,
};
use crate::protocol::{File, Message};
use crate::search::{Found, Index, Query};

/// How long one Redis command may take before lanboard gives up on it: a
/// write then fails with `storage-unavailable` rather than keep its poster
/// waiting. Redis answers in well under a millisecond when it is healthy.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `XREAD BLOCK` waits for new messages before the tail loop
/// goes round again (and checks the epoch). Far below [`COMMAND_TIMEOUT`]
/// plus this, which is how long the tail's connection waits for an answer.
const TAIL_BLOCK: Duration = Duration::from_millis(1000);
/// Messages one `XREAD` returns at most.
const TAIL_BATCH: usize = 1024;
/// How often the tail checks that the board's epoch is still the one it knows.
const EPOCH_CHECK: Duration = Duration::from_secs(1);
/// How often each node publishes its connection count and reads the others'.
const PRESENCE_EVERY: Duration = Duration::from_millis(500);
/// A node's count expires after this long without a refresh (a killed node
/// stops counting within seconds).
const PRESENCE_TTL: Duration = Duration::from_secs(5);
/// A new board (or one begun anew after it was lost) takes posts only once
/// it is this old, so that every running node has raised `last-id` to the
/// ids its clients saw (it does so every [`PRESENCE_EVERY`]).
const YOUNG_BOARD: Duration = Duration::from_millis(1200);
/// A write is sent with a deadline this much shorter than the time the node
/// waits for it, so that one Redis only gets to late never stores anything.
const DEADLINE_MARGIN: Duration = Duration::from_millis(300);
/// Messages an import sends in one script call.
const IMPORT_CHUNK: usize = 500;
/// How long a blocking call waits for the runtime's answer before it fails
/// as unavailable: longer than any call takes when the runtime is healthy
/// (an append is at most two [`COMMAND_TIMEOUT`]s: the young-board wait,
/// then one try), so only a stuck runtime reaches it.
const CALL_LIMIT: Duration = Duration::from_secs(6);
/// How long deletions are gathered before Redis is asked to rewrite its files.
const SCRUB_GATHER: Duration = Duration::from_millis(200);
/// How long to wait before asking again while a rewrite is already running.
const SCRUB_RETRY: Duration = Duration::from_millis(500);
/// How often to ask before giving up (with a warning) until the next deletion.
const SCRUB_ATTEMPTS: u32 = 120;
/// Bytes at the end of each chunk kept in its file's hash rather than in
/// the chunk's own key: enough for the string header Redis adds, so a full
/// chunk's value fits its allocator's 256 KiB size class instead of taking
/// the next one, 320 KiB (see the module documentation).
const CHUNK_TAIL: usize = 32;
/// How long an upload's chunks live in Redis by themselves: a safety net
/// for a board no node runs any more. The sweep
/// ([`FileStore::remove_orphans`], every node, within the hour) is what
/// drops unfinished uploads; this is far longer than any upload takes.
const UPLOAD_TTL: Duration = Duration::from_secs(6 * 60 * 60);
/// Files (and uploads) one sweep script removes at most, so that a long
/// backlog of orphans is removed a batch at a time rather than in one script
/// that keeps every other command waiting.
const ORPHAN_BATCH: usize = 64;
/// How long a panicked tail or presence task rests before it runs again, so a
/// fault that repeats does not spin.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Which Redis board to use: `--redis URL` and `--redis-prefix P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub url: String,
    pub prefix: String,
}

impl RedisTarget {
    /// The URL with any password masked, for the banner and error messages.
    pub fn display_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &self.url[..scheme + 3], &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }
}

/// Names of the board's keys.
struct Keys {
    message: String,
    changes: String,
    operator: String,
    block: String,
    stream: String,
    last_id: String,
    epoch: String,
    epoch_born: String,
    cid: String,
    nodes: String,
    node: String,
    secret: String,
    file: String,
    unreferenced: String,
    last_upload: String,
    uploads: String,
    upload: String,
    files_bytes: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            message: format!("{prefix}:message:"),
            changes: format!("{prefix}:changes"),
            operator: format!("{prefix}:operator"),
            block: format!("{prefix}:block:"),
            stream: format!("{prefix}:messages"),
            last_id: format!("{prefix}:last-id"),
            epoch: format!("{prefix}:epoch"),
            epoch_born: format!("{prefix}:epoch-born"),
            cid: format!("{prefix}:cid:"),
            nodes: format!("{prefix}:nodes"),
            node: format!("{prefix}:node:"),
            secret: format!("{prefix}:secret"),
            file: format!("{prefix}:file:"),
            unreferenced: format!("{prefix}:unreferenced-files"),
            last_upload: format!("{prefix}:last-upload"),
            uploads: format!("{prefix}:uploads"),
            upload: format!("{prefix}:upload:"),
            files_bytes: format!("{prefix}:files-bytes"),
        }
    }
}

/// Redis's clock in milliseconds, as Lua sees it.
const LUA_NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Lua helpers shared by the scripts. `field(f, name)` reads a field of a
/// flat field list; `current(stream, prefix, id)` is message `id` as it reads
/// now, from its hash `prefix .. id` (or, for a board written before hashes,
/// from its own stream entry), `nil` when it was never posted or is deleted;
/// its `files` is the JSON list of its files, "" for none. `row(kind, m)`
/// is a message's row: `kind, id, name, message, time, edited, files`.
const LUA_MESSAGES: &str = r#"
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function current(stream, prefix, id)
  local h = redis.call('HMGET', prefix .. id, 'name', 'message', 'time', 'edited', 'key', 'sender', 'files')
  if h[1] then
    return {id = id, name = h[1], message = h[2], time = h[3], edited = h[4] or '',
      key = h[5] or '', sender = h[6] or '', files = h[7] or ''}
  end
  local found = redis.call('XRANGE', stream, id .. '-0', id .. '-0')
  if #found == 0 or found[1][2][1] ~= 'name' then return nil end
  local f = found[1][2]
  return {id = id, name = field(f, 'name'), message = field(f, 'message'),
    time = field(f, 'time'), edited = field(f, 'edited') or '',
    key = field(f, 'key') or '', sender = field(f, 'sender') or '', files = ''}
end
local function row(kind, m)
  return {kind, m.id, m.name, m.message, m.time, m.edited, m.files}
end
"#;

/// Lua helpers for the board's files (see the module documentation). `f`
/// names the keys: `f.file` and `f.upload` (key prefixes), `f.bytes`,
/// `f.unreferenced` and `f.uploads`, as far as the script has them.
/// `remove_file(f, id)` removes a stored file, its chunks and its bytes, and
/// returns 1 (0 when there was none); `release(f, id)` is one message fewer
/// carrying it, removing it at none; `drop_upload(f, n)` removes upload `n`
/// and gives its bytes back; `file_json(id, h)` is a file as messages carry
/// it, from its hash's `name, size, type`.
const LUA_FILES: &str = r#"
local function remove_file(f, id)
  local hash = f.file .. id
  redis.call('ZREM', f.unreferenced, id)
  local h = redis.call('HMGET', hash, 'size', 'chunks')
  if not h[1] then return 0 end
  for k = 0, tonumber(h[2] or '0') - 1 do redis.call('DEL', hash .. ':' .. k) end
  redis.call('DEL', hash)
  redis.call('DECRBY', f.bytes, h[1])
  return 1
end
local function release(f, id)
  local hash = f.file .. id
  if redis.call('EXISTS', hash) == 0 then return 0 end
  if redis.call('HINCRBY', hash, 'refs', -1) > 0 then return 0 end
  return remove_file(f, id)
end
local function drop_upload(f, n)
  local hash = f.upload .. n
  local h = redis.call('HMGET', hash, 'chunks', 'bytes')
  for k = 0, tonumber(h[1] or '0') - 1 do redis.call('DEL', hash .. ':' .. k) end
  redis.call('DECRBY', f.bytes, h[2] or '0')
  redis.call('DEL', hash)
  redis.call('ZREM', f.uploads, n)
end
local function file_json(id, h)
  return '{"id":"' .. id .. '","name":' .. cjson.encode(h[1]) .. ',"size":' .. h[2]
    .. ',"type":' .. cjson.encode(h[3]) .. '}'
end
"#;

/// Carries out a batch of ops. KEYS: stream, last-id, epoch, epoch-born,
/// changes, operator, files-bytes, unreferenced-files. ARGV: the epoch the
/// node knows, the time, the cid key prefix, the cid memory in seconds, the
/// deadline (Redis clock, ms), the young-board wait (ms), the block key
/// prefix, the message key prefix, the file key prefix, then nine per op:
/// `kind, id, name, message, cid, key hash, key, sender, file ids` ("" where
/// an op has none; the ids joined by ","). Returns one row of strings per
/// op: `new|repeat|edited, id, name, message, time, edited, files` (an
/// edit's row ends with its change), `deleted, id, change, author|operator`,
/// `blocked-sender, id, until`, or a refusal: `forbidden`, `not-found`,
/// `blocked, until`, `unknown-file, id`.
///
/// A post's files are all looked up before it takes an id, so a post naming
/// a file the board does not hold changes nothing; an edit keeps the files
/// (they are in the hash it rewrites).
///
/// Past the deadline the node has already told its posters
/// `storage-unavailable`: a script that only runs then (Redis was frozen with
/// the command in its socket) stores nothing, so a refused post never
/// appears. A board younger than the wait refuses too, with the time left:
/// see [`EPOCH`].
const COMMIT: &str = r#"
if now > tonumber(ARGV[5]) then
  return redis.error_reply('LANBOARD_LATE the node stopped waiting for this write')
end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('LANBOARD_EPOCH the board was reset')
end
local born = tonumber(redis.call('GET', KEYS[4]) or '0')
if now - born < tonumber(ARGV[6]) then
  return redis.error_reply('LANBOARD_YOUNG ' .. string.format('%d', born + tonumber(ARGV[6]) - now))
end
local stream, changes, prefix = KEYS[1], KEYS[5], ARGV[8]
local f = {file = ARGV[9], bytes = KEYS[7], unreferenced = KEYS[8]}
local operator = redis.call('GET', KEYS[6]) or ''
local time = ARGV[2]
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local function text(n) return string.format('%d', n) end
local function store(m)
  local fields = {'name', m.name, 'message', m.message, 'time', m.time}
  for _, name in ipairs({'edited', 'key', 'sender', 'files'}) do
    if m[name] ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = m[name]
    end
  end
  redis.call('HSET', prefix .. m.id, unpack(fields))
end
local rows = {}
for i = 10, #ARGV, 9 do
  local kind, id, name, message = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local cid, hash, key, sender = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local file_ids = ARGV[i + 8]
  local is_operator = operator ~= '' and key == operator
  local answer = nil
  if kind == 'post' then
    if cid ~= '' then
      local earlier = redis.call('GET', ARGV[3] .. cid)
      local was, at = nil, nil
      if earlier then was, at = string.match(earlier, '^(%d+) (%-?%d+)$') end
      if was and tonumber(at) > tonumber(time) - tonumber(ARGV[4]) * 1000 then
        local m = current(stream, prefix, was)
        if m then answer = row('repeat', m) else answer = {'not-found'} end
      end
    end
    if not answer and sender ~= '' and not is_operator then
      local until_ = redis.call('GET', ARGV[7] .. sender)
      if until_ and tonumber(until_) > tonumber(time) then answer = {'blocked', until_} end
    end
    local carried, listed = {}, {}
    if not answer then
      for file_id in string.gmatch(file_ids, '[^,]+') do
        local h = redis.call('HMGET', f.file .. file_id, 'name', 'size', 'type')
        if not h[2] then
          answer = {'unknown-file', file_id}
          break
        end
        carried[#carried + 1] = file_id
        listed[#listed + 1] = file_json(file_id, h)
      end
    end
    if not answer then
      for _, file_id in ipairs(carried) do
        redis.call('HINCRBY', f.file .. file_id, 'refs', 1)
        redis.call('ZREM', f.unreferenced, file_id)
      end
      local files = ''
      if #listed > 0 then files = '[' .. table.concat(listed, ',') .. ']' end
      last = last + 1
      local m = {id = text(last), name = name, message = message, time = time,
        edited = '', key = hash, sender = sender, files = files}
      store(m)
      redis.call('XADD', stream, m.id .. '-0', 'post', '1')
      if cid ~= '' then
        redis.call('SET', ARGV[3] .. cid, m.id .. ' ' .. time, 'EX', ARGV[4])
      end
      answer = row('new', m)
    end
  elseif kind == 'block' then
    if not is_operator then
      answer = {'forbidden'}
    else
      local m = current(stream, prefix, id)
      if not m or m.sender == '' then
        answer = {'not-found'}
      else
        local minutes = tonumber(name)
        local until_ = text(tonumber(time) + minutes * 60000)
        redis.call('SET', ARGV[7] .. m.sender, until_, 'PX', minutes * 60000)
        answer = {'blocked-sender', id, until_}
      end
    end
  else
    local m = current(stream, prefix, id)
    local is_author = m and m.key ~= '' and m.key == hash
    if not m then
      answer = {'not-found'}
    elseif kind == 'edit' and not is_author then
      answer = {'forbidden'}
    elseif kind == 'delete' and not is_author and not is_operator then
      answer = {'forbidden'}
    else
      last = last + 1
      local change = text(last)
      if kind == 'edit' then
        m.message, m.edited = message, time
        store(m)
        redis.call('XADD', stream, change .. '-0', 'edit', id)
        answer = row('edited', m)
        answer[#answer + 1] = change
      else
        redis.call('DEL', prefix .. id)
        if m.files ~= '' then
          -- Written by lanboard (this script or IMPORT), so it decodes; were
          -- it not, the files would stay (and be counted) rather than the
          -- script stop halfway, its deletion half done.
          local ok, files = pcall(cjson.decode, m.files)
          if ok then
            for _, file in ipairs(files) do release(f, file.id) end
          end
        end
        redis.call('XDEL', stream, id .. '-0')
        redis.call('XADD', stream, change .. '-0', 'delete', id)
        local by = 'operator'
        if is_author then by = 'author' end
        answer = {'deleted', id, change, by}
      end
      redis.call('ZADD', changes, last, id)
    end
  end
  rows[#rows + 1] = answer
end
redis.call('SET', KEYS[2], text(last))
return rows
"#;

/// Messages in their current form, skipping the stream's edit and delete
/// entries. KEYS: stream. ARGV: `XRANGE` or `XREVRANGE`, where to start (a
/// stream range bound), how many, the message key prefix. Returns rows
/// `id, name, message, time, edited, files` in the command's order.
const READ: &str = r#"
local stream, prefix = KEYS[1], ARGV[4]
local command, cursor, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
while #out < limit do
  local batch
  if command == 'XRANGE' then
    batch = redis.call('XRANGE', stream, cursor, '+', 'COUNT', limit - #out)
  else
    batch = redis.call('XREVRANGE', stream, cursor, '-', 'COUNT', limit - #out)
  end
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local first = entry[2][1]
    if first == 'post' or first == 'name' then
      local m = current(stream, prefix, string.match(entry[1], '^(%d+)'))
      if m then out[#out + 1] = {m.id, m.name, m.message, m.time, m.edited, m.files} end
    end
  end
  cursor = '(' .. batch[#batch][1]
end
return out
"#;

/// Every message whose latest change is after an id, in change order.
/// KEYS: changes, stream. ARGV: the id, how many, the message key prefix.
/// Returns rows `change, id, ""` for a deletion, `change, id, name,
/// message, time, edited, files` for an edit.
const CHANGES: &str = r#"
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #found, 2 do
  local id, change = found[i], found[i + 1]
  local m = current(KEYS[2], ARGV[3], id)
  if m then
    out[#out + 1] = {change, id, m.name, m.message, m.time, m.edited, m.files}
  else
    out[#out + 1] = {change, id, ''}
  end
end
return out
"#;

/// The tail's read: the events after an id, each with the message as it
/// reads now. KEYS: stream. ARGV: the id, how many, the message key prefix.
/// Returns rows `post|edit, position, id, name, message, time, edited, files`,
/// `delete, position, id`, or `skip, position` for an entry whose message
/// is gone by now (its deletion follows) or that lanboard did not write.
const EVENTS: &str = r#"
local stream, prefix = KEYS[1], ARGV[3]
local batch = redis.call('XRANGE', stream, '(' .. ARGV[1] .. '-0', '+', 'COUNT', tonumber(ARGV[2]))
local out = {}
for _, entry in ipairs(batch) do
  local position = string.match(entry[1], '^(%d+)')
  local f = entry[2]
  local first = f[1]
  local answer = {'skip', position}
  if first == 'post' or first == 'name' then
    local m = current(stream, prefix, position)
    if m then answer = {'post', position, m.id, m.name, m.message, m.time, m.edited, m.files} end
  elseif first == 'edit' then
    local m = current(stream, prefix, f[2])
    if m then answer = {'edit', position, m.id, m.name, m.message, m.time, m.edited, m.files} end
  elseif first == 'delete' then
    answer = {'delete', position, f[2]}
  end
  out[#out + 1] = answer
end
return out
"#;

/// Messages by id, as they read now. KEYS: stream. ARGV: the message key
/// prefix, then the ids. Returns one row per id: `id, name, message, time,
/// edited, files`, or an empty row for a message that is gone.
const FETCH: &str = r#"
local out = {}
for i = 2, #ARGV do
  local m = current(KEYS[1], ARGV[1], ARGV[i])
  if m then out[#out + 1] = {m.id, m.name, m.message, m.time, m.edited, m.files} else out[#out + 1] = {} end
end
return out
"#;

/// Returns the board's epoch, creating it when the board is new or was lost.
/// KEYS: epoch, last-id, stream, epoch-born. ARGV: a fresh epoch, the
/// highest id this node has seen.
///
/// A new epoch starts its ids above the stream's newest id and what this node
/// has seen. Other nodes that are still running saw ids too, which this node
/// cannot know: each of them raises `last-id` to what it has seen every
/// [`PRESENCE_EVERY`] (see [`PRESENCE`]), and a new board takes posts only
/// once it is [`YOUNG_BOARD`] old, so an id a client has seen is not given out
/// again by the new board.
const EPOCH: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #top > 0 then
  local id = tonumber(string.match(top[1][1], '^(%d+)'))
  if id > last then last = id end
end
local seen = tonumber(ARGV[2])
if seen > last then last = seen end
redis.call('SET', KEYS[2], string.format('%d', last))
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[4], string.format('%d', now))
return ARGV[1]
"#;

/// Records this node's connection count and the highest id it has seen;
/// returns the board's total count and Redis's clock. KEYS: the node set,
/// last-id. ARGV: node key prefix, node id, count, ttl in ms, seen id.
const PRESENCE: &str = r#"
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[2])
local total = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = redis.call('GET', ARGV[1] .. node)
  if count then total = total + tonumber(count) else redis.call('SREM', KEYS[1], node) end
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[2], ARGV[5])
end
return {total, now}
"#;

/// Loads exported messages into an empty board. KEYS: stream, last-id,
/// unreferenced-files. ARGV: the message key prefix, the file key prefix,
/// then `id, name, message, time, edited, files, file ids` per message
/// ("" for never edited and for no files; `files` is the JSON list, the
/// ids joined by ","), ids increasing. Returns `imported, last id`, or
/// `missing, message id, file id` (storing nothing) when a message carries
/// a file the board does not hold.
const IMPORT: &str = r#"
local f = {file = ARGV[2], unreferenced = KEYS[3]}
for i = 3, #ARGV, 7 do
  for file_id in string.gmatch(ARGV[i + 6], '[^,]+') do
    if redis.call('EXISTS', f.file .. file_id) == 0 then return {'missing', ARGV[i], file_id} end
  end
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
for i = 3, #ARGV, 7 do
  local key = ARGV[1] .. ARGV[i]
  redis.call('HSET', key, 'name', ARGV[i + 1], 'message', ARGV[i + 2], 'time', ARGV[i + 3])
  if ARGV[i + 4] ~= '' then redis.call('HSET', key, 'edited', ARGV[i + 4]) end
  if ARGV[i + 5] ~= '' then redis.call('HSET', key, 'files', ARGV[i + 5]) end
  for file_id in string.gmatch(ARGV[i + 6], '[^,]+') do
    redis.call('HINCRBY', f.file .. file_id, 'refs', 1)
    redis.call('ZREM', f.unreferenced, file_id)
  end
  redis.call('XADD', KEYS[1], ARGV[i] .. '-0', 'post', '1')
  last = tonumber(ARGV[i])
end
redis.call('SET', KEYS[2], string.format('%d', last))
return {'imported', string.format('%d', last)}
"#;

/// Starts an upload. KEYS: last-upload, uploads. ARGV: the time (ms).
/// Returns the upload's number.
const BEGIN_UPLOAD: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[1], n)
return n
"#;

/// Stores one chunk of an upload in progress. KEYS: uploads, files-bytes.
/// ARGV: the upload's number, the upload key prefix, the chunk's number,
/// its body, its tail ([`CHUNK_TAIL`] bytes or fewer, "" for none), the
/// quota (bytes), the chunk's time to live (ms). Returns `ok`, `full` when
/// the board's files would pass the quota, or `dropped` when the upload is
/// no longer in progress (aborted, or swept).
const WRITE_CHUNK: &str = r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'dropped' end
local upload, seq = ARGV[2] .. ARGV[1], tonumber(ARGV[3])
local key, field = upload .. ':' .. ARGV[3], 't' .. ARGV[3]
local size = #ARGV[4] + #ARGV[5]
-- The same chunk written again replaces itself, in the count too.
local old = redis.call('STRLEN', key) + redis.call('HSTRLEN', upload, field)
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used - old + size > tonumber(ARGV[6]) then return 'full' end
redis.call('SET', key, ARGV[4], 'PX', ARGV[7])
if #ARGV[5] > 0 then redis.call('HSET', upload, field, ARGV[5]) else redis.call('HDEL', upload, field) end
redis.call('HINCRBY', upload, 'bytes', string.format('%d', size - old))
if seq >= tonumber(redis.call('HGET', upload, 'chunks') or '0') then
  redis.call('HSET', upload, 'chunks', string.format('%d', seq + 1))
end
redis.call('INCRBY', KEYS[2], string.format('%d', size - old))
return 'ok'
"#;

/// Ends an upload. KEYS: uploads, files-bytes, unreferenced-files. ARGV:
/// the upload's number, the upload key prefix, the file key prefix, then
/// the file's `id, name, size, type`, and the time (ms). Returns `new`;
/// `existing, name, size, type` when the board held the content already
/// (the upload is dropped, and the file's hour starts again if no message
/// carries it); `dropped` when the upload is no longer in progress or lost
/// a chunk to [`UPLOAD_TTL`]; or `wrong-size, bytes` when what was written
/// is not the file's size.
const FINISH_UPLOAD: &str = r#"
local f = {uploads = KEYS[1], bytes = KEYS[2], unreferenced = KEYS[3], upload = ARGV[2], file = ARGV[3]}
local n, id, size, time = ARGV[1], ARGV[4], ARGV[6], ARGV[8]
if not redis.call('ZSCORE', f.uploads, n) then return {'dropped'} end
local upload, file = f.upload .. n, f.file .. id
local existing = redis.call('HMGET', file, 'name', 'size', 'type', 'refs')
if existing[2] then
  drop_upload(f, n)
  if tonumber(existing[4] or '0') <= 0 then redis.call('ZADD', f.unreferenced, time, id) end
  return {'existing', existing[1], existing[2], existing[3]}
end
local h = redis.call('HMGET', upload, 'chunks', 'bytes')
local chunks, bytes = tonumber(h[1] or '0'), h[2] or '0'
if tonumber(bytes) ~= tonumber(size) then
  drop_upload(f, n)
  return {'wrong-size', bytes}
end
for k = 0, chunks - 1 do
  if redis.call('EXISTS', upload .. ':' .. k) == 0 then
    drop_upload(f, n)
    return {'dropped'}
  end
end
local fields = redis.call('HGETALL', upload)
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 1) == 't' then redis.call('HSET', file, fields[i], fields[i + 1]) end
end
for k = 0, chunks - 1 do
  redis.call('RENAME', upload .. ':' .. k, file .. ':' .. k)
  redis.call('PERSIST', file .. ':' .. k)
end
redis.call('HSET', file, 'name', ARGV[5], 'size', size, 'type', ARGV[7], 'refs', '0',
  'chunks', string.format('%d', chunks))
redis.call('DEL', upload)
redis.call('ZREM', f.uploads, n)
redis.call('ZADD', f.unreferenced, time, id)
return {'new'}
"#;

/// Drops an upload that will not be finished, if it is still in progress.
/// KEYS: uploads, files-bytes. ARGV: the upload's number, the upload key
/// prefix.
const ABORT_UPLOAD: &str = r#"
local f = {uploads = KEYS[1], bytes = KEYS[2], upload = ARGV[2]}
if redis.call('ZSCORE', f.uploads, ARGV[1]) then drop_upload(f, ARGV[1]) end
return 1
"#;

/// Removes up to a batch of the files no message carries whose last upload
/// was before a time, and of the uploads begun before it. KEYS:
/// unreferenced-files, uploads, files-bytes. ARGV: the time (ms), the file
/// key prefix, the upload key prefix, the batch. Returns how many files
/// went, how many uploads, and 1 when a batch was full (more may be left).
const REMOVE_ORPHANS: &str = r#"
local f = {unreferenced = KEYS[1], uploads = KEYS[2], bytes = KEYS[3], file = ARGV[2], upload = ARGV[3]}
local before, batch = '(' .. ARGV[1], tonumber(ARGV[4])
local files = redis.call('ZRANGEBYSCORE', f.unreferenced, '-inf', before, 'LIMIT', 0, batch)
local removed = 0
for _, id in ipairs(files) do
  -- Posting a file takes it out of the set; one found carried anyway
  -- only leaves the set.
  if tonumber(redis.call('HGET', f.file .. id, 'refs') or '0') > 0 then
    redis.call('ZREM', f.unreferenced, id)
  else
    removed = removed + remove_file(f, id)
  end
end
local uploads = redis.call('ZRANGEBYSCORE', f.uploads, '-inf', before, 'LIMIT', 0, batch)
for _, n in ipairs(uploads) do drop_upload(f, n) end
local more = 0
if #files == batch or #uploads == batch then more = 1 end
return {removed, #uploads, more}
"#;

/// The board in Redis. See the module documentation.
pub struct RedisLog {
    shared: Arc<Shared>,
    runtime: Background,
}

/// The log's tokio runtime, shut down without waiting when dropped: the log
/// may be dropped (or fail to open) on an async worker, where dropping a
/// runtime the usual, blocking way panics.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn handle(&self) -> &tokio::runtime::Handle {
        // Only `drop` takes the runtime out.
        self.0
            .as_ref()
            .expect("the runtime lives as long as the log")
            .handle()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct Shared {
    target: RedisTarget,
    keys: Keys,
    client: Client,
    commands: ConnectionManager,
    /// The epoch this node's board belongs to.
    epoch: Mutex<String>,
    /// The highest id this node has seen: where a new epoch starts counting.
    seen: AtomicU64,
    /// Redis's clock minus ours, in ms: write deadlines are on Redis's clock.
    clock_offset: AtomicI64,
    /// Set by a write that found the epoch changed, so the tail checks at once.
    check_epoch: AtomicBool,
    /// Woken by a commit that deleted or replaced text (and any files the
    /// deletion removed) and by a sweep that removed files: Redis's files
    /// are rewritten so it is gone from them too (see
    /// [`Shared::scrub_files`]).
    scrub: tokio::sync::Notify,
    node: String,
    /// This node's search index (see the module documentation).
    index: Index,
    /// The tail's batches, for the indexer ([`Shared::keep_index`]).
    fed: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Fed>>>,
    commit: Script,
    read: Script,
    changes: Script,
    events: Script,
    fetch: Script,
    epoch_script: Script,
    presence: Script,
    import: Script,
    begin_upload: Script,
    write_chunk: Script,
    finish_upload: Script,
    abort_upload: Script,
    remove_orphans: Script,
}

/// What the tail hands the indexer.
enum Fed {
    /// The events after `from` up to `to`, in order.
    Events {
        from: u64,
        to: u64,
        events: Vec<Event>,
    },
    /// The board was lost and begun anew as this epoch.
    Reset(String),
}

impl RedisLog {
    /// Connects, checks that this Redis can hold a board safely, and joins
    /// (or creates) the board under the target's prefix, with a search
    /// index in SQLite's temporary file.
    pub fn open(target: &RedisTarget) -> Result<RedisLog, StoreError> {
        RedisLog::open_indexed(target, Index::temporary()?)
    }

    /// [`RedisLog::open`] with this node's search index `index`.
    pub fn open_indexed(target: &RedisTarget, index: Index) -> Result<RedisLog, StoreError> {
        let runtime = Background(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("lanboard-redis")
                .enable_all()
                .build()
                .map_err(|e| StoreError::Redis(format!("could not start the Redis client: {e}")))?,
        ));
        let unreachable = |reason: String| StoreError::RedisUnreachable {
            url: target.display_url(),
            reason,
        };
        let client = Client::open(target.url.as_str()).map_err(|e| unreachable(e.to_string()))?;
        let connect = {
            let client = client.clone();
            async move { ConnectionManager::new_with_config(client, manager_config(None)).await }
        };
        let commands = run_on(runtime.handle(), async move {
            match tokio::time::timeout(COMMAND_TIMEOUT * 2, connect).await {
                Ok(connected) => connected.map_err(|e| StoreError::Redis(e.to_string())),
                Err(_) => Err(StoreError::Redis("no answer within 4 seconds".into())),
            }
        })
        .map_err(|e| {
            unreachable(match e {
                StoreError::Redis(reason) | StoreError::Unavailable(reason) => reason,
                other => other.to_string(),
            })
        })?;
        let shared = Arc::new(Shared {
            target: target.clone(),
            keys: Keys::new(&target.prefix),
            client,
            commands,
            epoch: Mutex::new(String::new()),
            seen: AtomicU64::new(0),
            clock_offset: AtomicI64::new(0),
            check_epoch: AtomicBool::new(false),
            scrub: tokio::sync::Notify::new(),
            node: random_token(),
            index,
            fed: Mutex::new(None),
            commit: Script::new(&format!("{LUA_NOW}{LUA_MESSAGES}{LUA_FILES}{COMMIT}")),
            read: Script::new(&format!("{LUA_MESSAGES}{READ}")),
            changes: Script::new(&format!("{LUA_MESSAGES}{CHANGES}")),
            events: Script::new(&format!("{LUA_MESSAGES}{EVENTS}")),
            fetch: Script::new(&format!("{LUA_MESSAGES}{FETCH}")),
            epoch_script: Script::new(&format!("{LUA_NOW}{EPOCH}")),
            presence: Script::new(&format!("{LUA_NOW}{PRESENCE}")),
            import: Script::new(IMPORT),
            begin_upload: Script::new(BEGIN_UPLOAD),
            write_chunk: Script::new(WRITE_CHUNK),
            finish_upload: Script::new(&format!("{LUA_FILES}{FINISH_UPLOAD}")),
            abort_upload: Script::new(&format!("{LUA_FILES}{ABORT_UPLOAD}")),
            remove_orphans: Script::new(&format!("{LUA_FILES}{REMOVE_ORPHANS}")),
        });
        let log = RedisLog { shared, runtime };
        log.check_server()?;
        let shared = log.shared.clone();
        log.call(async move {
            let mut conn = shared.commands.clone();
            let asked = now_ms();
            let (seconds, micros): (i64, i64) =
                timed(redis::cmd("TIME").query_async(&mut conn)).await?;
            shared.note_clock(asked, seconds * 1000 + micros / 1000);
            Ok::<(), StoreError>(())
        })?;
        let shared = log.shared.clone();
        let epoch = log.call(async move { shared.current_epoch().await })?;
        *log.shared.epoch.lock() = epoch;
        Ok(log)
    }

    /// Refuses a Redis too old for the commands used here or configured to
    /// evict keys, and warns when acknowledged messages could be lost in a
    /// Redis crash.
    fn check_server(&self) -> Result<(), StoreError> {
        let url = self.shared.target.display_url();
        let mut conn = self.shared.commands.clone();
        // The first command: a wrong password or a refused connection shows here.
        let info: String = self
            .call(
                async move { timed(redis::cmd("INFO").arg("server").query_async(&mut conn)).await },
            )
            .map_err(|e| StoreError::RedisUnreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        if !at_least_6_2(&version) {
            return Err(StoreError::RedisTooOld { url, version });
        }
        let config = |name: &'static str| {
            let mut conn = self.shared.commands.clone();
            self.call(async move {
                timed(
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async::<Vec<String>>(&mut conn),
                )
                .await
            })
            .map(|pair| pair.get(1).cloned().unwrap_or_default())
        };
        match config("maxmemory-policy") {
            Ok(policy) if policy.starts_with("allkeys-") => {
                return Err(StoreError::RedisMayEvict { url, policy })
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "could not read maxmemory-policy from Redis at {url} ({e}); \
                 make sure it is noeviction, or Redis may evict the board's messages"
            ),
        }
        match config("appendonly") {
            Ok(on) if on == "yes" => {}
            Ok(_) => log::warn!(
                "Redis at {url} runs with appendonly no: acknowledged messages since its last \
                 snapshot are lost if Redis crashes. Set `appendonly yes` in redis.conf"
            ),
            Err(e) => log::warn!(
                "could not read appendonly from Redis at {url} ({e}); \
                 without it, acknowledged messages can be lost if Redis crashes"
            ),
        }
        Ok(())
    }

    /// Runs `future` on the log's runtime and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(self.runtime.handle(), future)
    }

    /// The value of `key`, set to `fresh` first if it has none: a secret
    /// made once and the same for every node.
    fn made_once(&self, key: &str, fresh: &str) -> Result<String, StoreError> {
        let mut conn = self.shared.commands.clone();
        let (key, fresh) = (key.to_owned(), fresh.to_owned());
        self.call(async move {
            let _: Option<String> = timed(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(fresh)
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
            timed(conn.get(&key)).await
        })
    }

    fn read(
        &self,
        command: &'static str,
        from: String,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let shared = self.shared.clone();
        self.call(async move { shared.read(command, &from, limit).await })
    }
}

impl Drop for RedisLog {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        // Leaving at once takes this node out of the presence count now
        // rather than when its entry expires; best effort only.
        let _ = self.call(async move {
            let mut conn = shared.commands.clone();
            let key = format!("{}{}", shared.keys.node, shared.node);
            // A node entry left behind expires by itself within PRESENCE_TTL.
            let _ = tokio::time::timeout(Duration::from_millis(300), conn.del::<_, ()>(key)).await;
            Ok(())
        });
    }
}

impl Shared {
    /// One run of the commit script; see [`COMMIT`]. It stores nothing
    /// after `given_up` (our clock, ms), when the caller stops waiting.
    async fn try_commit(
        &self,
        ops: &[Op],
        time: i64,
        given_up: i64,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let deadline = (now_ms() + (COMMAND_TIMEOUT - DEADLINE_MARGIN).as_millis() as i64)
            .min(given_up - DEADLINE_MARGIN.as_millis() as i64)
            + self.clock_offset.load(Ordering::Relaxed);
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.last_id)
            .key(&self.keys.epoch)
            .key(&self.keys.epoch_born)
            .key(&self.keys.changes)
            .key(&self.keys.operator)
            .key(&self.keys.files_bytes)
            .key(&self.keys.unreferenced)
            .arg(self.epoch.lock().as_str())
            .arg(time)
            .arg(&self.keys.cid)
            .arg(CID_MEMORY_MS / 1000)
            .arg(deadline)
            .arg(YOUNG_BOARD.as_millis() as u64)
            .arg(&self.keys.block)
            .arg(&self.keys.message)
            .arg(&self.keys.file);
        for op in ops {
            for arg in op_args(op) {
                invocation.arg(arg);
            }
        }
        let mut conn = self.commands.clone();
        match timed(invocation.invoke_async(&mut conn)).await {
            Err(StoreError::Redis(e)) if e.contains("LANBOARD_EPOCH") => {
                // The board was lost: the tail resets this node and its
                // clients; until then posts wait like in any outage.
                self.check_epoch.store(true, Ordering::SeqCst);
                Err(StoreError::Unavailable(
                    "the board in Redis was lost and is starting over".into(),
                ))
            }
            Err(StoreError::Redis(e)) if e.contains("LANBOARD_YOUNG") => {
                let left = e
                    .split_whitespace()
                    .find_map(|word| word.parse::<u64>().ok())
                    .unwrap_or(100);
                Err(StoreError::Young(Duration::from_millis(
                    left.clamp(1, 2000),
                )))
            }
            Err(StoreError::Redis(e)) if e.contains("LANBOARD_LATE") => {
                Err(StoreError::Unavailable(e))
            }
            other => other,
        }
    }

    /// Messages in their current form from the [`READ`] script.
    async fn read(
        &self,
        command: &'static str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.commands.clone();
        let rows: Vec<Vec<String>> = timed(
            self.read
                .key(&self.keys.stream)
                .arg(command)
                .arg(from)
                .arg(limit)
                .arg(&self.keys.message)
                .invoke_async(&mut conn),
        )
        .await?;
        rows.iter().map(|row| message_from_row(row)).collect()
    }

    /// The board's epoch, created if the board is new or was lost.
    async fn current_epoch(&self) -> Result<String, StoreError> {
        let mut conn = self.commands.clone();
        timed(
            self.epoch_script
                .key(&self.keys.epoch)
                .key(&self.keys.last_id)
                .key(&self.keys.stream)
                .key(&self.keys.epoch_born)
                .arg(random_token())
                .arg(self.seen.load(Ordering::SeqCst))
                .invoke_async(&mut conn),
        )
        .await
    }

    /// Publishes every message after the follower's newest to it, forever
    /// (until it closes), resuming after outages from the last id it published.
    async fn tail(self: Arc<Self>, board: Arc<dyn Follower>) {
        let mut last = board.last_id();
        let mut conn: Option<ConnectionManager> = None;
        let mut epoch_checked = Instant::now();
        let mut down_since: Option<Instant> = None;
        // True while the last read was a full batch: more are waiting.
        let mut behind = true;
        while !board.is_closed() {
            if epoch_checked.elapsed() >= EPOCH_CHECK
                || self.check_epoch.swap(false, Ordering::SeqCst)
            {
                epoch_checked = Instant::now();
                match self.follow_epoch(&*board).await {
                    Ok(Some(reset_to)) => last = reset_to,
                    Ok(None) => {}
                    Err(e) => {
                        self.outage(&mut down_since, &e);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                }
            }
            let read = match conn.as_mut() {
                Some(conn) => self.read_after(conn, last, behind).await,
                None => {
                    let config = manager_config(Some(TAIL_BLOCK + COMMAND_TIMEOUT));
                    match timed(ConnectionManager::new_with_config(
                        self.client.clone(),
                        config,
                    ))
                    .await
                    {
                        Ok(fresh) => {
                            conn = Some(fresh);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match read {
                Ok((events, read_to, full)) => {
                    behind = full;
                    if let Some(since) = down_since.take() {
                        log::info!(
                            "Redis is reachable again after {:.1} s; delivery resumes after message {last}",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    self.seen.fetch_max(read_to, Ordering::SeqCst);
                    if !events.is_empty() {
                        board.publish(&events);
                    }
                    // Published first, so the batch moves to the indexer
                    // rather than being copied for it.
                    self.feed_index(last, read_to, events);
                    last = read_to;
                }
                Err(e) => {
                    self.outage(&mut down_since, &e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn outage(&self, down_since: &mut Option<Instant>, error: &StoreError) {
        if down_since.is_none() {
            *down_since = Some(Instant::now());
            log::warn!(
                "lost Redis at {} ({error}); posting is paused, reading continues from memory",
                self.target.display_url()
            );
        }
    }

    /// The events after `last` (at most [`TAIL_BATCH`]) and the position
    /// read to. Unless the last read was a full batch (`behind`), first
    /// waits for new entries with `XREAD BLOCK`, up to [`TAIL_BLOCK`]: it
    /// answers at once when there are some, so a busy board costs two
    /// commands a batch, not three.
    async fn read_after(
        &self,
        conn: &mut ConnectionManager,
        last: u64,
        behind: bool,
    ) -> Result<(Vec<Event>, u64, bool), StoreError> {
        if behind {
            return self.events_after(conn, last).await;
        }
        let arrived: Option<StreamReadReply> = tokio::time::timeout(
            TAIL_BLOCK + COMMAND_TIMEOUT,
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(TAIL_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.keys.stream)
                .arg(format!("{last}-0"))
                .query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("Redis did not answer in time".into()))?
        .map_err(classify)?;
        match arrived {
            Some(_) => self.events_after(conn, last).await,
            None => Ok((Vec::new(), last, false)),
        }
    }

    /// One run of [`EVENTS`] after `last`: the events, the position read
    /// to, and whether the batch was full.
    async fn events_after(
        &self,
        conn: &mut ConnectionManager,
        last: u64,
    ) -> Result<(Vec<Event>, u64, bool), StoreError> {
        let rows: Vec<Vec<String>> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.events
                .key(&self.keys.stream)
                .arg(last)
                .arg(TAIL_BATCH)
                .arg(&self.keys.message)
                .invoke_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("Redis did not answer in time".into()))?
        .map_err(classify)?;
        let mut events = Vec::new();
        let mut read_to = last;
        for row in &rows {
            // An entry the script cannot read (someone else wrote to the
            // stream) is passed over, not retried forever, which would
            // stop delivery on this node.
            match event_from_row(row) {
                Ok((position, event)) => {
                    read_to = read_to.max(position);
                    events.extend(event);
                }
                Err(e) => {
                    log::warn!("skipping a stream entry after {read_to}: {e}");
                    read_to = read_to.max(number(row.get(1)).unwrap_or(read_to));
                }
            }
        }
        Ok((events, read_to, rows.len() >= TAIL_BATCH))
    }

    /// Checks the epoch; when the board was lost and begun anew, resets the
    /// node's board to the new one and returns the id to tail after.
    async fn follow_epoch(&self, board: &dyn Follower) -> Result<Option<u64>, StoreError> {
        let epoch = self.current_epoch().await?;
        if *self.epoch.lock() == epoch {
            return Ok(None);
        }
        let mut recent = self.read("XREVRANGE", "+", board.window()).await?;
        recent.reverse();
        log::warn!(
            "the board in Redis at {} was lost (its epoch changed); clients are told to reload",
            self.target.display_url()
        );
        let last = recent.last().map_or(0, |m| m.id);
        *self.epoch.lock() = epoch.clone();
        self.send_to_index(Fed::Reset(epoch.clone()));
        board.reset(&recent, epoch);
        Ok(Some(last))
    }

    /// Hands a batch the tail read (the events after `from`, up to `to`) to
    /// the indexer.
    fn feed_index(&self, from: u64, to: u64, events: Vec<Event>) {
        if to > from {
            self.send_to_index(Fed::Events { from, to, events });
        }
    }

    fn send_to_index(&self, fed: Fed) {
        if let Some(sender) = self.fed.lock().as_ref() {
            // No indexer (it is restarting): it catches up from Redis.
            let _ = sender.send(fed);
        }
    }

    /// Keeps this node's search index current, until `board` closes: first
    /// catches it up from the stream (all of it for a new index, what it
    /// missed for a kept one), then applies each batch the tail reads, and
    /// reads from Redis itself only what it has not seen (after an outage
    /// or while it was busy).
    async fn keep_index(self: Arc<Self>, board: Arc<dyn Follower>) {
        let (sender, mut batches) = tokio::sync::mpsc::unbounded_channel();
        *self.fed.lock() = Some(sender);
        let mut conn = self.commands.clone();
        let mut at = loop {
            match self.start_index(&mut conn).await {
                Ok(at) => break at,
                Err(error) if !board.is_closed() => {
                    log::warn!(
                        "could not fill the search index from Redis ({error}); trying again"
                    );
                    tokio::time::sleep(RESTART_AFTER).await;
                }
                Err(_) => return,
            }
        };
        while !board.is_closed() {
            let Ok(Some(fed)) = tokio::time::timeout(TAIL_BLOCK, batches.recv()).await else {
                continue;
            };
            let done = match fed {
                Fed::Reset(epoch) => match self
                    .index_blocking(move |index| index.start_over(&epoch))
                    .await
                {
                    Ok(()) => self.catch_up(&mut conn, 0, None).await,
                    Err(error) => Err(error),
                },
                Fed::Events { from, to, events } => {
                    self.index_batch(&mut conn, at, from, to, events).await
                }
            };
            match done {
                Ok(now) => at = now,
                // The next batch finds the gap and reads it from Redis.
                Err(error) => {
                    log::warn!("the search index missed a batch ({error}); it reads it again")
                }
            }
        }
    }

    /// Brings a new or kept index to the board's present; returns its position.
    async fn start_index(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
    ) -> Result<u64, StoreError> {
        let epoch = self.epoch.lock().clone();
        let at = self
            .index_blocking(move |index| {
                let (at, indexed) = index.position()?;
                if indexed.as_deref() == Some(epoch.as_str()) {
                    return Ok(at);
                }
                index.start_over(&epoch)?;
                Ok(0)
            })
            .await?;
        let started = Instant::now();
        let now = self.catch_up(conn, at, None).await?;
        if now > at {
            log::info!(
                "search index: read the board from message {at} to {now} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(now)
    }

    /// Applies a batch the tail read, after reading from Redis whatever
    /// lies between the index's position `at` and the batch's start.
    async fn index_batch(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
        mut at: u64,
        from: u64,
        to: u64,
        events: Vec<Event>,
    ) -> Result<u64, StoreError> {
        if from > at {
            at = self.catch_up(conn, at, Some(from)).await?;
        }
        if to <= at {
            return Ok(at);
        }
        let newer: Vec<Event> = events.into_iter().filter(|e| e.position() > at).collect();
        self.index_blocking(move |index| index.apply(&newer, to))
            .await?;
        Ok(to)
    }

    /// Reads the stream's events after `at` into the index, until past
    /// `until` or, without it, to the end; returns the position reached.
    async fn catch_up(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
        mut at: u64,
        until: Option<u64>,
    ) -> Result<u64, StoreError> {
        loop {
            let (events, read_to, full) = self.events_after(conn, at).await?;
            if read_to > at {
                self.index_blocking(move |index| index.apply(&events, read_to))
                    .await?;
                at = read_to;
            }
            if !full || until.is_some_and(|until| at >= until) {
                return Ok(at);
            }
        }
    }

    /// Runs `work` on the index off the runtime's one worker thread, which
    /// the tail and every write share.
    async fn index_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Index) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || work(&shared.index))
            .await
            .map_err(|e| StoreError::Panicked(format!("the search index failed: {e}")))?
    }

    /// Remembers how far Redis's clock is from ours, from a command sent at
    /// `asked` (our clock) that Redis ran at `redis_now` (its clock).
    fn note_clock(&self, asked: i64, redis_now: i64) {
        let answered = now_ms();
        let offset = redis_now - (asked + answered) / 2;
        self.clock_offset.store(offset, Ordering::Relaxed);
    }

    /// After each commit that deleted or edited a message, and each sweep
    /// that removed files, asks Redis to rewrite its files: its append-only
    /// file still holds the commands that stored the old text (or a file's
    /// chunks), and its snapshot the old state, until rewritten.
    /// Deletions of the next [`SCRUB_GATHER`] share one rewrite; a rewrite
    /// already running (which may have begun before the deletion) is waited
    /// out and another asked for.
    async fn scrub_files(self: Arc<Self>, board: Arc<dyn Follower>) {
        while !board.is_closed() {
            self.scrub.notified().await;
            tokio::time::sleep(SCRUB_GATHER).await;
            for attempt in 0.. {
                match self.rewrite_files().await {
                    Ok(()) => break,
                    Err(error) if attempt < SCRUB_ATTEMPTS => {
                        log::debug!(
                            "Redis could not rewrite its files yet ({error}); asking again"
                        );
                        tokio::time::sleep(SCRUB_RETRY).await;
                    }
                    Err(error) => {
                        log::warn!(
                            "Redis at {} did not rewrite its files after a deletion ({error}); \
                             what was deleted stays in them until its next rewrite",
                            self.target.display_url()
                        );
                        break;
                    }
                }
            }
        }
    }

    /// `BGREWRITEAOF` when Redis keeps an append-only file, `BGSAVE` when it
    /// keeps snapshots; an error while one of them is already running.
    async fn rewrite_files(&self) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let config = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).to_owned();
        let appendonly: Vec<String> = timed(config("appendonly").query_async(&mut conn)).await?;
        if appendonly.get(1).is_some_and(|on| on == "yes") {
            let _: String = timed(redis::cmd("BGREWRITEAOF").query_async(&mut conn)).await?;
        }
        let save: Vec<String> = timed(config("save").query_async(&mut conn)).await?;
        if save.get(1).is_some_and(|rules| !rules.trim().is_empty()) {
            let _: String =
                timed(redis::cmd("BGSAVE").arg("SCHEDULE").query_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Every [`PRESENCE_EVERY`]: this node's count and highest id in, the
    /// board's total count and Redis's clock out.
    async fn share_presence(self: Arc<Self>, board: Arc<dyn Follower>) {
        let ttl = PRESENCE_TTL.as_millis() as u64;
        while !board.is_closed() {
            let local = board.local_online();
            let mut conn = self.commands.clone();
            let asked = now_ms();
            let answer: Result<(u64, i64), StoreError> = timed(
                self.presence
                    .key(&self.keys.nodes)
                    .key(&self.keys.last_id)
                    .arg(&self.keys.node)
                    .arg(&self.node)
                    .arg(local)
                    .arg(ttl)
                    .arg(self.seen.load(Ordering::SeqCst))
                    .invoke_async(&mut conn),
            )
            .await;
            if let Ok((total, redis_now)) = answer {
                board.set_elsewhere((total as usize).saturating_sub(local));
                self.note_clock(asked, redis_now);
            }
            tokio::time::sleep(PRESENCE_EVERY).await;
        }
    }
}

impl Log for RedisLog {
    fn commit(&self, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError> {
        let shared = self.shared.clone();
        // Measured here, not in the task: a runtime slow to start the task
        // must not stretch the write past the moment this thread gives up.
        let started = Instant::now();
        let given_up = now_ms() + CALL_LIMIT.as_millis() as i64;
        let rows = self.call(async move {
            loop {
                match shared.try_commit(&ops, time, given_up).await {
                    // A board just begun: wait until every node had its
                    // say on the ids (see EPOCH), within the usual time limit.
                    Err(StoreError::Young(wait)) if started.elapsed() + wait < COMMAND_TIMEOUT => {
                        tokio::time::sleep(wait).await;
                    }
                    Err(StoreError::Young(_)) => {
                        return Err(StoreError::Unavailable(
                            "the board in Redis is starting; try again in a moment".into(),
                        ))
                    }
                    other => return other,
                }
            }
        })?;
        let outcomes: Vec<Outcome> = rows
            .iter()
            .map(|row| outcome_from_row(row))
            .collect::<Result<_, _>>()?;
        // A deletion is the only way a commit removes files, so this also
        // takes their chunks out of Redis's files.
        if outcomes
            .iter()
            .any(|o| matches!(o, Ok(Done::Edited { .. } | Done::Deleted { .. })))
        {
            self.shared.scrub.notify_one();
        }
        Ok(outcomes)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.read("XRANGE", format!("({id}-0"), limit)
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        if id == 0 {
            return Ok(Vec::new());
        }
        let from = if id == u64::MAX {
            "+".into()
        } else {
            format!("({id}-0")
        };
        let mut messages = self.read("XREVRANGE", from, limit)?;
        messages.reverse();
        Ok(messages)
    }

    fn changes(&self, id: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let shared = self.shared.clone();
        let rows: Vec<Vec<String>> = self.call(async move {
            let mut conn = shared.commands.clone();
            timed(
                shared
                    .changes
                    .key(&shared.keys.changes)
                    .key(&shared.keys.stream)
                    .arg(id)
                    .arg(limit)
                    .arg(&shared.keys.message)
                    .invoke_async(&mut conn),
            )
            .await
        })?;
        rows.iter()
            .map(|row| {
                let change = number(row.first())?;
                if row.len() == 3 {
                    return Ok(Event::Deleted {
                        id: number(row.get(1))?,
                        change,
                    });
                }
                Ok(Event::Edited {
                    message: message_from_row(&row[1..])?,
                    change,
                })
            })
            .collect()
    }

    fn search(&self, query: &Query, before: u64, limit: usize) -> Result<Found, StoreError> {
        let mut found = self.shared.index.find(query, before, limit)?;
        if found.hits.is_empty() {
            return Ok(found);
        }
        let shared = self.shared.clone();
        let ids: Vec<u64> = found.hits.iter().map(|hit| hit.message.id).collect();
        let rows: Vec<Vec<String>> = self.call(async move {
            let mut conn = shared.commands.clone();
            let mut fetch = shared.fetch.key(&shared.keys.stream);
            fetch.arg(&shared.keys.message);
            for id in ids {
                fetch.arg(id);
            }
            timed(fetch.invoke_async(&mut conn)).await
        })?;
        let mut now = Vec::with_capacity(rows.len());
        for row in &rows {
            now.push(if row.is_empty() {
                None
            } else {
                Some(message_from_row(row)?)
            });
        }
        // A hit the index found by words the message no longer has (it
        // heard of the edit or deletion only after it was committed) is
        // left out.
        found.hits = std::mem::take(&mut found.hits)
            .into_iter()
            .zip(now)
            .filter_map(|(mut hit, now)| {
                let now = now?;
                (now.name == hit.message.name && now.message == hit.message.message).then(|| {
                    hit.message = now;
                    hit
                })
            })
            .collect();
        Ok(found)
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        // The newest entry of any kind: a post, an edit or a deletion.
        let mut conn = self.shared.commands.clone();
        let key = self.shared.keys.stream.clone();
        let newest: StreamRangeReply = self.call(async move {
            timed(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await
        })?;
        Ok(newest
            .ids
            .first()
            .and_then(|entry| stream_position(&entry.id))
            .unwrap_or(0))
    }

    fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        check_import_order(messages)?;
        let mut conn = self.shared.commands.clone();
        let key = self.shared.keys.stream.clone();
        let length: u64 = self.call(async move { timed(conn.xlen(key)).await })?;
        if length != 0 {
            return Err(StoreError::NotEmpty);
        }
        // Every file is looked for first, so that a missing one stops the
        // import before any message is stored; the script looks again, for
        // a file removed meanwhile.
        let mut checked = std::collections::HashSet::new();
        for m in messages {
            for file in &m.files {
                if checked.insert(file.id.as_str()) && self.file(&file.id)?.is_none() {
                    return Err(StoreError::MissingFile {
                        message: m.id,
                        id: file.id.clone(),
                    });
                }
            }
        }
        for chunk in messages.chunks(IMPORT_CHUNK) {
            let shared = self.shared.clone();
            let chunk = chunk.to_vec();
            let answer: Vec<String> = self.call(async move {
                let mut invocation = shared.import.prepare_invoke();
                invocation
                    .key(&shared.keys.stream)
                    .key(&shared.keys.last_id)
                    .key(&shared.keys.unreferenced)
                    .arg(&shared.keys.message)
                    .arg(&shared.keys.file);
                for m in &chunk {
                    let ids: Vec<&str> = m.files.iter().map(|f| f.id.as_str()).collect();
                    invocation
                        .arg(m.id)
                        .arg(&m.name)
                        .arg(&m.message)
                        .arg(m.time)
                        .arg(m.edited.map_or(String::new(), |t| t.to_string()))
                        .arg(crate::files::to_column(&m.files).unwrap_or_default())
                        .arg(ids.join(","));
                }
                let mut conn = shared.commands.clone();
                timed(invocation.invoke_async(&mut conn)).await
            })?;
            if answer.first().is_some_and(|kind| kind == "missing") {
                return Err(StoreError::MissingFile {
                    message: number(answer.get(1))?,
                    id: answer.get(2).cloned().unwrap_or_default(),
                });
            }
        }
        Ok(messages.len())
    }

    fn describe(&self) -> String {
        format!(
            "Redis at {}, prefix {}",
            self.shared.target.display_url(),
            self.shared.target.prefix
        )
    }

    fn shared_secret(&self, fresh: &str) -> Result<String, StoreError> {
        self.made_once(&self.shared.keys.secret, fresh)
    }

    fn epoch(&self) -> Option<String> {
        Some(self.shared.epoch.lock().clone())
    }

    fn operator_secret(&self, fresh: &str) -> Result<String, StoreError> {
        self.made_once(&self.shared.keys.operator, fresh)
    }

    fn rotate_operator_secret(&self, fresh: &str) -> Result<(), StoreError> {
        let mut conn = self.shared.commands.clone();
        let key = self.shared.keys.operator.clone();
        let fresh = fresh.to_owned();
        self.call(async move { timed(conn.set(&key, fresh)).await })
    }

    fn files(&self) -> &dyn FileStore {
        self
    }
}

impl FileStore for RedisLog {
    fn begin_upload(&self, time: i64) -> Result<UploadId, StoreError> {
        let shared = self.shared.clone();
        let upload: u64 = self.call(async move {
            let mut conn = shared.commands.clone();
            timed(
                shared
                    .begin_upload
                    .key(&shared.keys.last_upload)
                    .key(&shared.keys.uploads)
                    .arg(time)
                    .invoke_async(&mut conn),
            )
            .await
        })?;
        Ok(UploadId(upload))
    }

    fn write_chunk(
        &self,
        upload: UploadId,
        seq: u32,
        bytes: &[u8],
        quota: u64,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let (body, tail) = split_chunk(bytes);
        let (body, tail) = (body.to_vec(), tail.to_vec());
        let answer: String = self.call(async move {
            let mut conn = shared.commands.clone();
            timed(
                shared
                    .write_chunk
                    .key(&shared.keys.uploads)
                    .key(&shared.keys.files_bytes)
                    .arg(upload.0)
                    .arg(&shared.keys.upload)
                    .arg(seq)
                    .arg(body)
                    .arg(tail)
                    .arg(quota)
                    .arg(UPLOAD_TTL.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await
        })?;
        match answer.as_str() {
            "ok" => Ok(()),
            "full" => Err(StoreError::FilesFull { quota }),
            "dropped" => Err(dropped()),
            other => Err(StoreError::Redis(format!(
                "unexpected answer from the chunk script: {other:?}"
            ))),
        }
    }

    fn finish_upload(
        &self,
        upload: UploadId,
        file: &File,
        time: i64,
    ) -> Result<Stored, StoreError> {
        let shared = self.shared.clone();
        let asked = file.clone();
        let answer: Vec<String> = self.call(async move {
            let mut conn = shared.commands.clone();
            timed(
                shared
                    .finish_upload
                    .key(&shared.keys.uploads)
                    .key(&shared.keys.files_bytes)
                    .key(&shared.keys.unreferenced)
                    .arg(upload.0)
                    .arg(&shared.keys.upload)
                    .arg(&shared.keys.file)
                    .arg(&asked.id)
                    .arg(&asked.name)
                    .arg(asked.size)
                    .arg(&asked.media_type)
                    .arg(time)
                    .invoke_async(&mut conn),
            )
            .await
        })?;
        match answer.first().map(String::as_str) {
            Some("new") => Ok(Stored::New(file.clone())),
            Some("existing") => Ok(Stored::Existing(File {
                id: file.id.clone(),
                name: answer.get(1).cloned().unwrap_or_default(),
                size: number(answer.get(2))?,
                media_type: answer.get(3).cloned().unwrap_or_default(),
            })),
            Some("dropped") => Err(dropped()),
            Some("wrong-size") => Err(StoreError::Redis(format!(
                "upload {} holds {} bytes, not the {} of file {}",
                upload.0,
                answer.get(1).map_or("?", String::as_str),
                file.size,
                file.id
            ))),
            other => Err(StoreError::Redis(format!(
                "unexpected answer from the finishing script: {other:?}"
            ))),
        }
    }

    fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        self.call(async move {
            let mut conn = shared.commands.clone();
            timed::<()>(
                shared
                    .abort_upload
                    .key(&shared.keys.uploads)
                    .key(&shared.keys.files_bytes)
                    .arg(upload.0)
                    .arg(&shared.keys.upload)
                    .invoke_async(&mut conn),
            )
            .await
        })
    }

    fn file(&self, id: &str) -> Result<Option<File>, StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.call(async move {
            let mut conn = shared.commands.clone();
            let key = format!("{}{id}", shared.keys.file);
            let (name, size, media_type): (Option<String>, Option<u64>, Option<String>) = timed(
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("name")
                    .arg("size")
                    .arg("type")
                    .query_async(&mut conn),
            )
            .await?;
            Ok(size.map(|size| File {
                id,
                name: name.unwrap_or_default(),
                size,
                media_type: media_type.unwrap_or_default(),
            }))
        })
    }

    fn read_chunk(&self, id: &str, seq: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let shared = self.shared.clone();
        let hash = format!("{}{id}", self.shared.keys.file);
        self.call(async move {
            let mut conn = shared.commands.clone();
            // One transaction, so a file removed meanwhile is read whole or
            // not at all, never as a body without its tail.
            let (body, tail): (Option<Vec<u8>>, Option<Vec<u8>>) = timed(
                redis::pipe()
                    .atomic()
                    .get(format!("{hash}:{seq}"))
                    .hget(&hash, format!("t{seq}"))
                    .query_async(&mut conn),
            )
            .await?;
            Ok(body.map(|mut body| {
                body.extend(tail.unwrap_or_default());
                body
            }))
        })
    }

    fn remove_orphans(&self, before: i64) -> Result<usize, StoreError> {
        let (mut files, mut uploads) = (0, 0);
        loop {
            let shared = self.shared.clone();
            let (removed, dropped, more): (usize, usize, u8) = self.call(async move {
                let mut conn = shared.commands.clone();
                timed(
                    shared
                        .remove_orphans
                        .key(&shared.keys.unreferenced)
                        .key(&shared.keys.uploads)
                        .key(&shared.keys.files_bytes)
                        .arg(before)
                        .arg(&shared.keys.file)
                        .arg(&shared.keys.upload)
                        .arg(ORPHAN_BATCH)
                        .invoke_async(&mut conn),
                )
                .await
            })?;
            files += removed;
            uploads += dropped;
            if more == 0 {
                break;
            }
        }
        if files + uploads > 0 {
            // Their content is still in Redis's files, as deleted text is.
            self.shared.scrub.notify_one();
        }
        Ok(files)
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        let mut conn = self.shared.commands.clone();
        let key = self.shared.keys.files_bytes.clone();
        let used: Option<i64> = self.call(async move { timed(conn.get(key)).await })?;
        Ok(used.map_or(0, |used| used.max(0) as u64))
    }
}

fn dropped() -> StoreError {
    StoreError::Refused("the upload was dropped".into())
}

/// A chunk as Redis keeps it: its body, in the chunk's key, and its last
/// [`CHUNK_TAIL`] bytes (none for a chunk shorter than [`CHUNK_BYTES`] less
/// those), in its hash.
fn split_chunk(bytes: &[u8]) -> (&[u8], &[u8]) {
    bytes.split_at(bytes.len().min(CHUNK_BYTES - CHUNK_TAIL))
}

/// The nine script arguments of one op (see [`COMMIT`]).
fn op_args(op: &Op) -> [String; 9] {
    let none = String::new;
    match op {
        Op::Post(draft) => [
            "post".into(),
            none(),
            draft.name().into(),
            draft.message().into(),
            draft.cid().unwrap_or_default().into(),
            draft.key_hash().unwrap_or_default(),
            draft.key().unwrap_or_default().into(),
            draft.sender().unwrap_or_default().into(),
            draft.files().join(","),
        ],
        Op::Edit { id, message, key } => [
            "edit".into(),
            id.to_string(),
            none(),
            message.clone(),
            none(),
            crate::protocol::key_hash(key),
            key.clone(),
            none(),
            none(),
        ],
        Op::Delete { id, key } => [
            "delete".into(),
            id.to_string(),
            none(),
            none(),
            none(),
            crate::protocol::key_hash(key),
            key.clone(),
            none(),
            none(),
        ],
        Op::Block { id, minutes, key } => [
            "block".into(),
            id.to_string(),
            minutes.to_string(),
            none(),
            none(),
            none(),
            key.clone(),
            none(),
            none(),
        ],
    }
}

fn number<T: std::str::FromStr>(text: Option<&String>) -> Result<T, StoreError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| StoreError::Redis(format!("unexpected answer from a script: {text:?}")))
}

/// A message from a script's row `id, name, message, time, edited, files`
/// (`files` the JSON list, "" or absent for none: a message posted before
/// boards kept files has none).
fn message_from_row(row: &[String]) -> Result<Message, StoreError> {
    let edited = match row.get(4).map(String::as_str) {
        None | Some("") => None,
        Some(_) => Some(number(row.get(4))?),
    };
    let files = match row.get(5).map(String::as_str) {
        None | Some("") => Vec::new(),
        Some(json) => serde_json::from_str(json).map_err(|error| {
            StoreError::Redis(format!(
                "a message's files are not readable ({error}): {json}"
            ))
        })?,
    };
    Ok(Message {
        id: number(row.first())?,
        name: row.get(1).cloned().unwrap_or_default(),
        message: row.get(2).cloned().unwrap_or_default(),
        time: number(row.get(3))?,
        edited,
        files,
    })
}

/// One op's answer from its [`COMMIT`] row.
fn outcome_from_row(row: &[String]) -> Result<Outcome, StoreError> {
    let kind = row.first().map(String::as_str).unwrap_or_default();
    let message = || message_from_row(row.get(1..).unwrap_or_default());
    Ok(match kind {
        "new" => Ok(Done::Posted(Appended::New(message()?))),
        "repeat" => Ok(Done::Posted(Appended::Repeat(message()?))),
        "edited" => Ok(Done::Edited {
            message: message()?,
            change: number(row.get(7))?,
        }),
        "deleted" => Ok(Done::Deleted {
            id: number(row.get(1))?,
            change: number(row.get(2))?,
            by: if row.get(3).is_some_and(|by| by == "author") {
                Actor::Author
            } else {
                Actor::Operator
            },
        }),
        "blocked-sender" => Ok(Done::Blocked {
            id: number(row.get(1))?,
            until: number(row.get(2))?,
        }),
        "forbidden" => Err(Denied::Forbidden),
        "not-found" => Err(Denied::NotFound),
        "blocked" => Err(Denied::Blocked {
            until: number(row.get(1))?,
        }),
        "unknown-file" => Err(Denied::UnknownFile {
            id: row.get(1).cloned().unwrap_or_default(),
        }),
        other => {
            return Err(StoreError::Redis(format!(
                "unexpected answer from the commit script: {other:?}"
            )))
        }
    })
}

/// The number `n` of a stream id `n-0`.
fn stream_position(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(n, _)| n.parse().ok())
}

impl RedisLog {
    /// Starts the live feed: tails the stream into `board` (from its newest
    /// message on) and shares presence with the other nodes, until `board`
    /// closes. Each task that panics is restarted, the tail from the
    /// board's newest message, so no message is skipped or repeated.
    pub fn follow(&self, board: Arc<dyn Follower>) -> Feed {
        let runtime = self.runtime.handle();
        self.shared
            .seen
            .fetch_max(board.last_id(), Ordering::SeqCst);
        let (shared, follower) = (self.shared.clone(), board.clone());
        runtime.spawn(supervise("the Redis tail", move || {
            shared.clone().tail(follower.clone())
        }));
        let (shared, follower) = (self.shared.clone(), board.clone());
        runtime.spawn(supervise("presence sharing", move || {
            shared.clone().share_presence(follower.clone())
        }));
        let (shared, follower) = (self.shared.clone(), board.clone());
        runtime.spawn(supervise("the search index", move || {
            shared.clone().keep_index(follower.clone())
        }));
        let shared = self.shared.clone();
        runtime.spawn(supervise("rewriting Redis's files", move || {
            shared.clone().scrub_files(board.clone())
        }));
        Feed::Tail
    }
}

/// Runs the task `start` makes until it ends by itself; when it panics, logs
/// it and starts another after [`RESTART_AFTER`].
async fn supervise<F, T>(name: &'static str, mut start: F)
where
    F: FnMut() -> T,
    T: Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Err(error) if error.is_panic() => {
                log::error!(
                    "{name} failed ({}); restarting it",
                    panic_text(error.into_panic())
                );
                tokio::time::sleep(RESTART_AFTER).await;
            }
            // Ended (the board closed) or cancelled (the runtime is stopping).
            _ => return,
        }
    }
}

/// The message a panic carried, when it is text.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "a panic".to_owned(),
        },
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn manager_config(response_timeout: Option<Duration>) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(response_timeout.unwrap_or(COMMAND_TIMEOUT)))
        // Reconnecting is retried by lanboard's own loops; the manager's
        // own retries would only make a failing call wait longer.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// Runs `future` on `runtime` from any thread and waits for its result, at
/// most [`CALL_LIMIT`]. A future that panics (a fault in the redis crate), a
/// runtime that is gone or one that does not answer in time all make the call
/// fail as unavailable: the writer thread answers its posters and carries on.
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let outcome = match tokio::spawn(future).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let text = if error.is_panic() {
                    panic_text(error.into_panic())
                } else {
                    "cancelled".to_owned()
                };
                log::error!("a call to Redis failed inside the client: {text}");
                Err(StoreError::Unavailable(format!(
                    "the Redis client failed ({text})"
                )))
            }
        };
        // A caller that gave up waiting (CALL_LIMIT) no longer listens.
        let _ = done.send(outcome);
    });
    match result.recv_timeout(CALL_LIMIT) {
        Ok(outcome) => outcome,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
            "the Redis client did not answer within {} s",
            CALL_LIMIT.as_secs()
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(
            "the Redis client has stopped".into(),
        )),
    }
}

/// A command with lanboard's time limit, its error turned into a [`StoreError`].
async fn timed<T>(command: impl Future<Output = Result<T, RedisError>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(StoreError::Unavailable(format!(
            "Redis did not answer within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

/// An error Redis answered (a refusal) is a storage error; anything else
/// (connection refused or lost, a timeout, a Redis still loading its data)
/// means Redis is unavailable for now.
fn classify(error: RedisError) -> StoreError {
    match error.code() {
        Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN") | None => {
            StoreError::Unavailable(error.to_string())
        }
        Some(_) => StoreError::Redis(error.to_string()),
    }
}

/// An [`EVENTS`] row: the entry's position and the event it records, if
/// any is left to tell.
fn event_from_row(row: &[String]) -> Result<(u64, Option<Event>), StoreError> {
    let position = number(row.get(1))?;
    let message = || message_from_row(row.get(2..).unwrap_or_default());
    let event = match row.first().map(String::as_str) {
        Some("post") => Some(Event::Posted(message()?)),
        Some("edit") => Some(Event::Edited {
            message: message()?,
            change: position,
        }),
        Some("delete") => Some(Event::Deleted {
            id: number(row.get(2))?,
            change: position,
        }),
        _ => None,
    };
    Ok((position, event))
}

/// True when `version` ("7.0.15") is 6.2 or newer.
fn at_least_6_2(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (6, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_whose_future_panics_fails_as_unavailable_and_the_next_call_works() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let failed = run_on::<()>(runtime.handle(), async { panic!("a fault in the client") });
        assert!(
            matches!(&failed, Err(e) if e.is_unavailable()),
            "{failed:?}"
        );
        assert_eq!(run_on(runtime.handle(), async { Ok(7) }).unwrap(), 7);
    }

    #[test]
    fn a_task_that_panics_is_restarted_until_it_ends_by_itself() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        runtime.block_on(supervise("a test task", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("the first run fails");
                }
            }
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_chunk_keeps_its_last_bytes_apart_and_a_short_one_is_kept_whole() {
        let full = vec![7u8; CHUNK_BYTES];
        let (body, tail) = split_chunk(&full);
        assert_eq!(
            (body.len(), tail.len()),
            (CHUNK_BYTES - CHUNK_TAIL, CHUNK_TAIL)
        );
        let nearly = vec![7u8; CHUNK_BYTES - CHUNK_TAIL + 5];
        assert_eq!(split_chunk(&nearly).1.len(), 5);
        let short = vec![7u8; 1000];
        assert_eq!(split_chunk(&short), (&short[..], &[][..]));
        assert_eq!(split_chunk(&[]), (&[][..], &[][..]));
    }

    fn row(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_row_s_files_column_becomes_the_message_s_files_and_an_old_row_has_none() {
        let id = "ab".repeat(32);
        let files = format!(r#"[{{"id":"{id}","name":"a\/b.png","size":3,"type":"image/png"}}]"#);
        let message = message_from_row(&row(&["4", "ana", "hi", "10", "", &files])).unwrap();
        assert_eq!(
            message.files,
            [File {
                id,
                name: "a/b.png".into(),
                size: 3,
                media_type: "image/png".into(),
            }]
        );
        for old in [
            row(&["4", "ana", "hi", "10", ""]),
            row(&["4", "ana", "hi", "10", "", ""]),
        ] {
            assert_eq!(message_from_row(&old).unwrap().files, []);
        }
        let broken = message_from_row(&row(&["4", "ana", "hi", "10", "", "[{"]));
        assert!(matches!(broken, Err(StoreError::Redis(_))), "{broken:?}");
    }

    #[test]
    fn an_edit_s_change_follows_the_files_and_an_unknown_file_is_a_refusal() {
        let edited = outcome_from_row(&row(&["edited", "4", "ana", "new", "10", "12", "", "9"]));
        assert!(
            matches!(&edited, Ok(Ok(Done::Edited { message, change: 9 })) if message.edited == Some(12)),
            "{edited:?}"
        );
        let id = "cd".repeat(32);
        assert_eq!(
            outcome_from_row(&row(&["unknown-file", &id])).unwrap(),
            Err(Denied::UnknownFile { id })
        );
    }

    #[test]
    fn a_post_passes_its_file_ids_joined_and_other_ops_pass_none() {
        let limits = crate::cli::default_config().session.limits;
        let ids = ["ab".repeat(32), "cd".repeat(32)];
        let object = serde_json::json!({"name": "ana", "message": "", "files": ids});
        let draft = crate::protocol::Draft::parse(&object, limits).unwrap();
        assert_eq!(op_args(&Op::Post(draft))[8], ids.join(","));
        let delete = Op::Delete {
            id: 4,
            key: "k".repeat(16),
        };
        assert_eq!(op_args(&delete)[8], "");
    }

    #[test]
    fn versions_from_6_2_on_are_accepted() {
        assert!(at_least_6_2("6.2.0"));
        assert!(at_least_6_2("7.0.15"));
        assert!(at_least_6_2("10.0.1"));
        assert!(!at_least_6_2("6.0.16"));
        assert!(!at_least_6_2("5.0.7"));
        assert!(!at_least_6_2("unknown"));
    }

    #[test]
    fn a_password_in_the_url_is_masked() {
        let target = |url: &str| RedisTarget {
            url: url.into(),
            prefix: "p".into(),
        };
        assert_eq!(
            target("redis://:s3cret@10.0.0.5:6379/0").display_url(),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(
            target("redis://127.0.0.1:6379/0").display_url(),
            "redis://127.0.0.1:6379/0"
        );
    }
}
