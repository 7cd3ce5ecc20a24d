//! Protocol v1 against the real binary on a real socket.

mod common;

use common::{get, ids, post, Board, Client};
use serde_json::{json, Value};

#[tokio::test]
async fn a_new_client_receives_messages_available_first() {
    let board = Board::start(&[]);
    let client = Client::connect(&board.ws_url()).await;
    assert_eq!(client.welcome["event"], "messages-available");
    assert_eq!(client.history, Vec::<Value>::new());
}

#[tokio::test]
async fn add_message_reaches_both_clients_with_the_same_id() {
    let board = Board::start(&[]);
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    alice
        .send(json!({"event": "add-message", "data": {"name": "Alice", "message": "hello"}}))
        .await;
    let to_alice = alice.next_event("message-added").await;
    let to_bob = bob.next_event("message-added").await;
    assert_eq!(to_alice, to_bob);
    let message = &to_bob["data"];
    assert_eq!(message["id"], 1);
    assert_eq!(message["name"], "Alice");
    assert_eq!(message["message"], "hello");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let time = message["time"].as_i64().expect("time is an integer");
    assert!(
        (now_ms - time).abs() < 60_000,
        "time {time} is ms since the epoch"
    );
}
