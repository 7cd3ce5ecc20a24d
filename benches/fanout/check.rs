//! The correctness half of every run: each client got each message exactly
//! once, and all clients saw one order.
//!
//! A client's record is the sequence of (sender, seq) keys it received and,
//! on lanboard, the ids that came with them. The first client is the
//! reference: its keys, sorted, must be exactly every key sent; every other
//! client must match it element by element (so it too holds each key once).
//! On lanboard the ids must also rise strictly and be the same everywhere.

/// What one client received, in arrival order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// `Stamp::key()` of each delivery.
    pub keys: Vec<u64>,
    /// lanboard's id of each delivery; empty for the original.
    pub ids: Vec<u64>,
}

/// What passed beyond the required checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// True if and only if each sender's messages arrived in the order sent.
    /// Not required (a board may commit one sender's pipelined posts in
    /// another order), but worth knowing.
    pub sender_fifo: bool,
}

fn key(sender: u64, seq: u64) -> u64 {
    (sender << 32) | seq
}

/// Checks the records of every client of a run in which senders `0..senders`
/// sent `messages` each. With `ids`, lanboard's ids are checked too.
pub fn verify(
    clients: &[&Received],
    senders: u64,
    messages: u64,
    ids: bool,
) -> Result<Verdict, String> {
    let expected = (senders * messages) as usize;
    let Some(reference) = clients.first() else {
        return Err("no client records to check".into());
    };
    for (client, record) in clients.iter().enumerate() {
        if record.keys.len() != expected {
            return Err(format!(
                "client {client} received {} message(s), expected {expected}",
                record.keys.len()
            ));
        }
    }
    let mut sorted = reference.keys.clone();
    sorted.sort_unstable();
    let all = (0..senders).flat_map(|s| (0..messages).map(move |q| key(s, q)));
    if let Some((got, want)) = sorted.iter().zip(all).find(|(got, want)| **got != *want) {
        let (s, q) = (want >> 32, want & 0xffff_ffff);
        return Err(if sorted.binary_search(&want).is_ok() {
            format!("client 0 received a message more than once (first unexpected key {got:#x})")
        } else {
            format!("client 0 never received message {q} of sender {s}")
        });
    }
    for (client, record) in clients.iter().enumerate().skip(1) {
        if let Some(at) = first_difference(&record.keys, &reference.keys) {
            return Err(format!(
                "client {client} saw another order than client 0 (first at delivery {at})"
            ));
        }
    }
    if ids {
        for (client, record) in clients.iter().enumerate() {
            if record.ids.len() != record.keys.len() {
                return Err(format!(
                    "client {client} has {} ids for {} messages",
                    record.ids.len(),
                    record.keys.len()
                ));
            }
            if let Some(at) = record.ids.windows(2).position(|w| w[0] >= w[1]) {
                return Err(format!(
                    "client {client} received id {} after id {} (delivery {})",
                    record.ids[at + 1],
                    record.ids[at],
                    at + 1
                ));
            }
            if let Some(at) = first_difference(&record.ids, &reference.ids) {
                return Err(format!(
                    "client {client} got id {} where client 0 got {} (delivery {at})",
                    record.ids[at], reference.ids[at]
                ));
            }
        }
    }
    let mut next = vec![0u64; senders as usize];
    let sender_fifo = reference.keys.iter().all(|&k| {
        let (s, q) = ((k >> 32) as usize, k & 0xffff_ffff);
        let in_order = next[s] == q;
        next[s] = q + 1;
        in_order
    });
    Ok(Verdict { sender_fifo })
}

fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Checks the checker on small made-up runs; panics on the first failure.
pub fn self_check() {
    // Two senders, three messages each, interleaved the same way everywhere.
    let keys = vec![
        key(0, 0),
        key(1, 0),
        key(0, 1),
        key(1, 1),
        key(1, 2),
        key(0, 2),
    ];
    let ids: Vec<u64> = (10..16).collect();
    let good = Received {
        keys: keys.clone(),
        ids: ids.clone(),
    };
    let run = |records: &[&Received], with_ids| verify(records, 2, 3, with_ids);
    assert_eq!(
        run(&[&good, &good.clone(), &good.clone()], true),
        Ok(Verdict { sender_fifo: true })
    );

    let mut reordered = good.clone();
    reordered.keys.swap(0, 1);
    let message = run(&[&good, &reordered], false).unwrap_err();
    assert!(message.contains("another order"), "{message}");

    let mut swapped_within_sender = good.clone();
    swapped_within_sender.keys.swap(0, 2);
    let both = [&swapped_within_sender, &swapped_within_sender.clone()];
    assert_eq!(run(&both, false), Ok(Verdict { sender_fifo: false }));

    let mut duplicate = good.clone();
    duplicate.keys[5] = key(0, 0);
    let message = run(&[&duplicate], false).unwrap_err();
    assert!(message.contains("more than once"), "{message}");

    let mut missing = good.clone();
    missing.keys.pop();
    missing.ids.pop();
    let message = run(&[&good, &missing], true).unwrap_err();
    assert!(message.contains("received 5 message(s)"), "{message}");

    let mut foreign = good.clone();
    foreign.keys[2] = key(0, 7);
    let message = run(&[&foreign], false).unwrap_err();
    assert!(message.contains("never received message"), "{message}");

    let mut other_ids = good.clone();
    other_ids.ids[3] = 99;
    assert!(
        run(&[&good, &other_ids], false).is_ok(),
        "ids are ignored for the original"
    );
    let message = run(&[&other_ids, &good], true).unwrap_err();
    assert!(message.contains("after id 99"), "{message}");
    other_ids.ids = (20..26).collect();
    let message = run(&[&good, &other_ids], true).unwrap_err();
    assert!(message.contains("where client 0 got"), "{message}");

    assert!(run(&[], false).is_err());
    assert_eq!(
        verify(&[&Received::default()], 0, 0, true),
        Ok(Verdict { sender_fifo: true })
    );
}
