//! One conformance suite for every store behind the board's `Log` seam:
//! memory, SQLite and Redis (a real `redis-server`) must behave alike.

mod common;

use std::path::Path;

use common::redis::{Persistence, Redis};
use lanboard::protocol::{Draft, Message};
use lanboard::store::{
    Access, Appended, Log, MemoryLog, RedisLog, RedisTarget, SqliteLog, StoreError, SyncMode,
};

fn draft(text: &str, cid: Option<&str>) -> Draft {
    Draft::new("n", text, lanboard::cli::default_config().session.limits)
        .unwrap()
        .with_cid(cid.map(str::to_owned))
}

fn drafts(texts: &[&str]) -> Vec<Draft> {
    texts.iter().map(|t| draft(t, None)).collect()
}

fn ids(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.id).collect()
}

fn appended_ids(appended: &[Appended]) -> Vec<u64> {
    appended.iter().map(|a| a.message().id).collect()
}

fn ids_strictly_increase_and_reads_respect_their_bounds(log: &dyn Log) {
    assert_eq!(log.last_id().unwrap(), 0);
    let first = log.append(drafts(&["a", "b", "c"]), 10).unwrap();
    assert_eq!(appended_ids(&first), [1, 2, 3]);
    assert!(first.iter().all(|a| matches!(a, Appended::New(_))));
    let second = log.append(drafts(&["d", "e"]), 11).unwrap();
    assert_eq!(
        appended_ids(&second),
        [4, 5],
        "ids strictly increase across appends"
    );
    assert_eq!(second[1].message().message, "e");
    assert_eq!(second[1].message().time, 11);
    assert_eq!(log.last_id().unwrap(), 5);
    assert_eq!(ids(&log.after(0, 100).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(ids(&log.after(2, 2).unwrap()), [3, 4]);
    assert_eq!(ids(&log.after(5, 10).unwrap()), Vec::<u64>::new());
    assert_eq!(ids(&log.before(5, 2).unwrap()), [3, 4]);
    assert_eq!(ids(&log.before(u64::MAX, 3).unwrap()), [3, 4, 5]);
    assert_eq!(ids(&log.before(1, 10).unwrap()), Vec::<u64>::new());
    assert_eq!(ids(&log.before(0, 10).unwrap()), Vec::<u64>::new());
    let stored: Vec<Message> = first.into_iter().map(Appended::into_message).collect();
    assert_eq!(log.before(3, 10).unwrap(), stored[..2].to_vec());
}

fn a_repeated_cid_returns_the_original_and_stores_nothing(log: &dyn Log) {
    let start = log.last_id().unwrap();
    let sent = log.append(vec![draft("once", Some("cid-1"))], 20).unwrap();
    let Appended::New(original) = &sent[0] else {
        panic!("the first send is stored: {sent:?}");
    };
    // A resend, later, with other text (a client fixing a typo must not
    // change what was stored) and inside a batch with a new message.
    let again = log
        .append(
            vec![
                draft("twice?", Some("cid-1")),
                draft("other", Some("cid-2")),
            ],
            21,
        )
        .unwrap();
    assert_eq!(again[0], Appended::Repeat(original.clone()));
    assert!(matches!(&again[1], Appended::New(m) if m.id == original.id + 1));
    // The same cid twice in one batch is stored once.
    let twins = log
        .append(
            vec![draft("x", Some("cid-3")), draft("x", Some("cid-3"))],
            22,
        )
        .unwrap();
    assert!(matches!(&twins[0], Appended::New(_)));
    assert_eq!(twins[1], Appended::Repeat(twins[0].message().clone()));
    assert_eq!(
        ids(&log.after(start, 100).unwrap()),
        [start + 1, start + 2, start + 3],
        "each cid stored exactly once"
    );
    // Messages without a cid are never deduplicated.
    let plain = log.append(drafts(&["same", "same"]), 23).unwrap();
    assert_eq!(appended_ids(&plain), [start + 4, start + 5]);
}

fn a_cid_is_forgotten_after_a_day(log: &dyn Log) {
    let day_ms = 24 * 60 * 60 * 1000;
    let first = log.append(vec![draft("m", Some("old"))], 1_000).unwrap();
    let next_day = log
        .append(vec![draft("m", Some("old"))], 1_000 + day_ms + 1)
        .unwrap();
    assert!(
        matches!(&next_day[0], Appended::New(m) if m.id > first[0].message().id),
        "a day later the cid is new again: {next_day:?}"
    );
}

fn import_keeps_ids_and_only_fills_an_empty_board(log: &dyn Log) {
    let exported = vec![
        draft("a", None).into_message(3, 7),
        draft("b", None).into_message(40, 8),
    ];
    let disordered = vec![exported[1].clone(), exported[0].clone()];
    assert!(matches!(
        log.import(&disordered),
        Err(StoreError::OutOfOrder { .. })
    ));
    assert_eq!(log.import(&exported).unwrap(), 2);
    assert_eq!(log.after(0, 10).unwrap(), exported);
    assert_eq!(appended_ids(&log.append(drafts(&["c"]), 9).unwrap()), [41]);
    assert!(matches!(log.import(&exported), Err(StoreError::NotEmpty)));
}

/// Everything that does not need a restart, each on a fresh log from `fresh`.
fn conforms(mut fresh: impl FnMut() -> Box<dyn Log>) {
    ids_strictly_increase_and_reads_respect_their_bounds(&*fresh());
    a_repeated_cid_returns_the_original_and_stores_nothing(&*fresh());
    a_cid_is_forgotten_after_a_day(&*fresh());
    import_keeps_ids_and_only_fills_an_empty_board(&*fresh());
}

/// Writes, reopens with `reopen`, and checks that messages, ids and cids survived.
fn restart_keeps_everything(log: Box<dyn Log>, reopen: impl FnOnce(Box<dyn Log>) -> Box<dyn Log>) {
    let written = log
        .append(vec![draft("x", Some("kept")), draft("y", None)], 1)
        .unwrap();
    let written: Vec<Message> = written.into_iter().map(Appended::into_message).collect();
    let log = reopen(log);
    assert_eq!(log.after(0, 10).unwrap(), written);
    assert_eq!(log.last_id().unwrap(), 2);
    assert_eq!(
        log.append(vec![draft("x", Some("kept"))], 2).unwrap()[0],
        Appended::Repeat(written[0].clone()),
        "cids survive a restart"
    );
    assert_eq!(appended_ids(&log.append(drafts(&["z"]), 2).unwrap()), [3]);
}

#[test]
fn the_memory_log_conforms() {
    conforms(|| Box::new(MemoryLog::default()));
}

fn sqlite(path: &Path) -> Box<dyn Log> {
    Box::new(SqliteLog::open(path, Access::Write, SyncMode::Normal).unwrap())
}

#[test]
fn the_sqlite_log_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conforms(|| {
        n += 1;
        sqlite(&dir.path().join(format!("{n}.db")))
    });
}

#[test]
fn the_sqlite_log_keeps_everything_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    restart_keeps_everything(sqlite(&path), |log| {
        drop(log);
        sqlite(&path)
    });
}

fn redis_log(redis: &Redis, prefix: &str) -> Box<dyn Log> {
    let target = RedisTarget {
        url: redis.url(),
        prefix: prefix.into(),
    };
    Box::new(RedisLog::open(&target).unwrap())
}

#[test]
fn the_redis_log_conforms() {
    let Some(redis) = Redis::start(Persistence::None) else {
        return;
    };
    // Each check gets a fresh board under its own prefix in the same Redis,
    // which also shows that prefixes keep boards apart.
    let mut n = 0;
    conforms(|| {
        n += 1;
        redis_log(&redis, &format!("board{n}"))
    });
}

#[test]
fn the_redis_log_keeps_everything_across_a_restart_of_lanboard_and_of_redis() {
    let Some(mut redis) = Redis::start(Persistence::AppendOnly) else {
        return;
    };
    let url = redis.url();
    let prefix = "kept";
    let log = redis_log(&redis, prefix);
    restart_keeps_everything(log, |log| {
        drop(log);
        redis.restart();
        let target = RedisTarget {
            url,
            prefix: prefix.into(),
        };
        Box::new(RedisLog::open(&target).unwrap())
    });
}
