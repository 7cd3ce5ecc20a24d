//! One conformance suite for every store behind the board's `Log` seam:
//! memory, SQLite and Redis (a real `redis-server`) must behave alike.

mod common;

use std::path::Path;

use common::redis::{Persistence, Redis};
use lanboard::protocol::{Draft, Message};
use lanboard::store::{
    Access, Actor, Appended, Denied, Done, Event, Log, MemoryLog, Op, Outcome, RedisLog,
    RedisTarget, SqliteLog, StoreError, SyncMode,
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
        draft("a", None).into_message(3, 7, Vec::new()),
        draft("b", None).into_message(40, 8, Vec::new()),
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

const OPERATOR: &str = "operator-secret-0123456789abcdef";
const ALICE: &str = "alice-key-0123456789";
const CAROL: &str = "carol-key-0123456789";

/// A post by the holder of `key` from address `from`.
fn post(text: &str, key: Option<&str>, from: &str) -> Op {
    Op::Post(
        draft(text, None)
            .with_key(key.map(str::to_owned))
            .with_sender(Some(from.parse().unwrap())),
    )
}

fn edit(id: u64, text: &str, key: &str) -> Op {
    Op::Edit {
        id,
        message: text.into(),
        key: key.into(),
    }
}

fn delete(id: u64, key: &str) -> Op {
    Op::Delete {
        id,
        key: key.into(),
    }
}

fn block(id: u64, minutes: u64, key: &str) -> Op {
    Op::Block {
        id,
        minutes,
        key: key.into(),
    }
}

/// Commits one op and returns its answer.
fn one(log: &dyn Log, op: Op, time: i64) -> Outcome {
    log.commit(vec![op], time).unwrap().remove(0)
}

fn posted_id(outcome: &Outcome) -> u64 {
    match outcome {
        Ok(Done::Posted(appended)) => appended.message().id,
        other => panic!("expected a stored post, got {other:?}"),
    }
}

fn edits_and_deletions_take_ids_in_the_one_order_and_follow_the_keys(log: &dyn Log) {
    assert_eq!(log.operator_secret(OPERATOR).unwrap(), OPERATOR);
    let posted = log
        .commit(
            vec![
                post("alice's", Some(ALICE), "10.0.0.1"),
                post("nobody's", None, "10.0.0.2"),
                post("carol's", Some(CAROL), "10.0.0.3"),
            ],
            10,
        )
        .unwrap();
    assert_eq!(posted.iter().map(posted_id).collect::<Vec<_>>(), [1, 2, 3]);

    let edited = one(log, edit(1, "alice's, fixed", ALICE), 20).unwrap();
    let Done::Edited { message, change } = &edited else {
        panic!("the author edits: {edited:?}");
    };
    assert_eq!((message.id, change), (1, &4), "the edit takes the next id");
    assert_eq!(
        (
            message.message.as_str(),
            message.edited,
            message.time,
            message.name.as_str()
        ),
        ("alice's, fixed", Some(20), 10, "n")
    );
    assert_eq!(one(log, edit(1, "x", CAROL), 21), Err(Denied::Forbidden));
    assert_eq!(
        one(log, edit(1, "x", OPERATOR), 21),
        Err(Denied::Forbidden),
        "the operator deletes but does not edit others' words"
    );
    assert_eq!(
        one(log, edit(2, "x", ALICE), 21),
        Err(Denied::Forbidden),
        "no key, no author"
    );
    assert_eq!(one(log, edit(99, "x", ALICE), 21), Err(Denied::NotFound));
    assert_eq!(
        one(log, edit(4, "x", ALICE), 21),
        Err(Denied::NotFound),
        "4 is a change"
    );

    assert_eq!(one(log, delete(2, ALICE), 30), Err(Denied::Forbidden));
    assert_eq!(
        one(log, delete(2, OPERATOR), 30),
        Ok(Done::Deleted {
            id: 2,
            change: 5,
            by: Actor::Operator
        })
    );
    assert_eq!(
        one(log, delete(1, ALICE), 31),
        Ok(Done::Deleted {
            id: 1,
            change: 6,
            by: Actor::Author
        })
    );
    assert_eq!(
        one(log, delete(1, ALICE), 32),
        Err(Denied::NotFound),
        "already deleted"
    );
    assert_eq!(one(log, edit(1, "back?", ALICE), 32), Err(Denied::NotFound));

    assert_eq!(
        ids(&log.after(0, 10).unwrap()),
        [3],
        "deleted messages are gone from reads"
    );
    assert_eq!(ids(&log.before(u64::MAX, 10).unwrap()), [3]);
    assert_eq!(
        log.last_id().unwrap(),
        6,
        "the last id given out was a change"
    );
    let next = posted_id(&one(log, post("after", Some(ALICE), "10.0.0.1"), 33));
    assert_eq!(next, 7, "posts go on from the change ids");

    // The latest change of each message, in change order: message 1's
    // edit (4) was overtaken by its deletion (6).
    assert_eq!(
        log.changes(0, 10).unwrap(),
        vec![
            Event::Deleted { id: 2, change: 5 },
            Event::Deleted { id: 1, change: 6 },
        ]
    );
    one(log, edit(3, "carol's, fixed", CAROL), 40).unwrap();
    let changes = log.changes(5, 10).unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0], Event::Deleted { id: 1, change: 6 });
    assert!(
        matches!(&changes[1], Event::Edited { message, change: 8 }
            if message.id == 3 && message.message == "carol's, fixed" && message.edited == Some(40)),
        "{changes:?}"
    );
    assert_eq!(log.changes(8, 10).unwrap(), vec![]);
    assert_eq!(log.changes(0, 1).unwrap().len(), 1, "the limit holds");
    assert_eq!(
        log.after(2, 10).unwrap()[0].message,
        "carol's, fixed",
        "reads give the current form"
    );
}

fn only_the_operator_blocks_and_a_block_holds_until_it_ends(log: &dyn Log) {
    log.operator_secret(OPERATOR).unwrap();
    let id = posted_id(&one(log, post("spam", Some(CAROL), "10.0.0.3"), 100));
    posted_id(&one(log, post("fine", None, "10.0.0.4"), 100));
    assert_eq!(one(log, block(id, 60, CAROL), 101), Err(Denied::Forbidden));
    assert_eq!(one(log, block(999, 60, ALICE), 101), Err(Denied::Forbidden));
    assert_eq!(
        one(log, block(999, 60, OPERATOR), 101),
        Err(Denied::NotFound)
    );
    let until = 101 + 60 * 60_000;
    assert_eq!(
        one(log, block(id, 60, OPERATOR), 101),
        Ok(Done::Blocked { id, until })
    );
    assert_eq!(
        one(log, post("more spam", Some(CAROL), "10.0.0.3"), 102),
        Err(Denied::Blocked { until })
    );
    assert_eq!(
        one(log, post("no key", None, "10.0.0.3"), 102),
        Err(Denied::Blocked { until }),
        "a block is by address, not key"
    );
    posted_id(&one(log, post("others post", None, "10.0.0.4"), 102));
    posted_id(&one(
        log,
        post("the operator posts", Some(OPERATOR), "10.0.0.3"),
        102,
    ));
    posted_id(&one(log, post("later", Some(CAROL), "10.0.0.3"), until + 1));
}

fn a_resent_cid_of_a_deleted_post_is_not_found_and_not_stored_again(log: &dyn Log) {
    let sent = log
        .commit(
            vec![Op::Post(
                draft("oops", Some("c-9")).with_key(Some(ALICE.into())),
            )],
            10,
        )
        .unwrap();
    let id = posted_id(&sent[0]);
    one(log, delete(id, ALICE), 11).unwrap();
    let last = log.last_id().unwrap();
    assert_eq!(
        one(log, Op::Post(draft("oops", Some("c-9"))), 12),
        Err(Denied::NotFound)
    );
    assert_eq!(log.last_id().unwrap(), last, "nothing was stored");
    assert_eq!(log.after(0, 10).unwrap(), vec![]);
}

fn a_rotated_operator_secret_replaces_the_old_one(log: &dyn Log) {
    assert_eq!(log.operator_secret(OPERATOR).unwrap(), OPERATOR);
    assert_eq!(
        log.operator_secret("another-fresh-secret-000").unwrap(),
        OPERATOR,
        "made once"
    );
    let ids: Vec<u64> = log
        .commit(
            vec![post("a", None, "10.0.0.1"), post("b", None, "10.0.0.1")],
            10,
        )
        .unwrap()
        .iter()
        .map(posted_id)
        .collect();
    let rotated = "rotated-operator-secret-42";
    log.rotate_operator_secret(rotated).unwrap();
    assert_eq!(
        log.operator_secret("ignored-fresh-secret").unwrap(),
        rotated
    );
    assert_eq!(
        one(log, delete(ids[0], OPERATOR), 11),
        Err(Denied::Forbidden)
    );
    assert!(matches!(
        one(log, delete(ids[0], rotated), 11),
        Ok(Done::Deleted {
            by: Actor::Operator,
            ..
        })
    ));
}

/// Everything that does not need a restart, each on a fresh log from `fresh`.
fn conforms(mut fresh: impl FnMut() -> Box<dyn Log>) {
    ids_strictly_increase_and_reads_respect_their_bounds(&*fresh());
    a_repeated_cid_returns_the_original_and_stores_nothing(&*fresh());
    a_cid_is_forgotten_after_a_day(&*fresh());
    import_keeps_ids_and_only_fills_an_empty_board(&*fresh());
    edits_and_deletions_take_ids_in_the_one_order_and_follow_the_keys(&*fresh());
    only_the_operator_blocks_and_a_block_holds_until_it_ends(&*fresh());
    a_resent_cid_of_a_deleted_post_is_not_found_and_not_stored_again(&*fresh());
    a_rotated_operator_secret_replaces_the_old_one(&*fresh());
}

/// Writes, reopens with `reopen`, and checks that messages, ids and cids survived.
fn restart_keeps_everything(
    log: Box<dyn Log>,
    mut reopen: impl FnMut(Box<dyn Log>) -> Box<dyn Log>,
) {
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
    // Changes, blocks and the operator secret survive too.
    log.operator_secret(OPERATOR).unwrap();
    let from_3 = Op::Post(draft("w", None).with_sender(Some("10.0.0.9".parse().unwrap())));
    let blocked_id = posted_id(&one(&*log, from_3, 3));
    one(&*log, delete(1, OPERATOR), 3).unwrap();
    one(&*log, block(blocked_id, 60, OPERATOR), 3).unwrap();
    let changes = log.changes(0, 10).unwrap();
    let log = reopen(log);
    assert_eq!(log.changes(0, 10).unwrap(), changes);
    assert_eq!(log.last_id().unwrap(), 5);
    assert!(matches!(
        one(
            &*log,
            Op::Post(draft("v", None).with_sender(Some("10.0.0.9".parse().unwrap()))),
            4
        ),
        Err(Denied::Blocked { .. })
    ));
    assert_eq!(
        log.operator_secret("fresh-but-not-used-x").unwrap(),
        OPERATOR
    );
}

#[test]
fn the_memory_log_conforms() {
    conforms(|| Box::new(MemoryLog::new().unwrap()));
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
            url: url.clone(),
            prefix: prefix.into(),
        };
        Box::new(RedisLog::open(&target).unwrap())
    });
}
