//! The chat demo's browser stand-in: joins a room on two gateways
//! (client/examples/chat_app.rs), sends a line on each and checks that both
//! sockets receive both lines, in the same order, with sequence numbers.
//! With `--resume`, also drops the second socket, sends a line while it is
//! away, and rejoins from the last sequence number it saw: it must get the
//! missed line. Exits 0 on success, 1 with the reason otherwise; every wait
//! is bounded.
//!
//! ```text
//! cargo run -p ringkv-client --example chat_check -- 127.0.0.1:8091 127.0.0.1:8092 [--resume]
//! ```

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

async fn connect(gateway: &str, name: &str, from: u64) -> Result<Socket, String> {
    let url = format!("ws://{gateway}/ws/demo?name={name}&from={from}");
    let (mut socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
        .await
        .map_err(|_| format!("{url}: no connection in {WAIT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let hello = next_line(&mut socket).await?;
    if !hello.starts_with("joined ") {
        return Err(format!("{url}: expected the join notice, got {hello:?}"));
    }
    println!("{name} on {gateway}: {hello}");
    Ok(socket)
}

async fn next_line(socket: &mut Socket) -> Result<String, String> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .map_err(|_| format!("no message in {WAIT:?}"))?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(text) = message {
            return Ok(text.to_string());
        }
    }
}

/// Reads lines until one ends with `text`; returns its sequence number.
async fn expect(socket: &mut Socket, who: &str, text: &str) -> Result<u64, String> {
    loop {
        let line = next_line(socket).await?;
        println!("{who} got: {line}");
        if line.starts_with("error") {
            return Err(format!("{who}: {line}"));
        }
        if line.ends_with(text) {
            let seq = line.split(' ').next().and_then(|s| s.parse().ok());
            return seq.ok_or(format!("{who}: no sequence number in {line:?}"));
        }
    }
}

async fn run(a: &str, b: &str, resume: bool) -> Result<(), String> {
    let mut alice = connect(a, "alice", 0).await?;
    let mut bob = connect(b, "bob", 0).await?;
    alice.send(Message::text("hi bob")).await.map_err(|e| e.to_string())?;
    let sent_a = expect(&mut bob, "bob", "alice: hi bob").await?;
    assert_same(sent_a, expect(&mut alice, "alice", "alice: hi bob").await?)?;
    bob.send(Message::text("hi alice")).await.map_err(|e| e.to_string())?;
    let sent_b = expect(&mut alice, "alice", "bob: hi alice").await?;
    assert_same(sent_b, expect(&mut bob, "bob", "bob: hi alice").await?)?;
    if sent_b <= sent_a {
        return Err(format!("sequence numbers went from {sent_a} to {sent_b}"));
    }
    if resume {
        drop(bob);
        alice.send(Message::text("are you there?")).await.map_err(|e| e.to_string())?;
        expect(&mut alice, "alice", "alice: are you there?").await?;
        // Bob comes back, through the other gateway, from where he was.
        let mut bob = connect(a, "bob", sent_b + 1).await?;
        expect(&mut bob, "bob", "alice: are you there?").await?;
    }
    Ok(())
}

fn assert_same(one: u64, other: u64) -> Result<(), String> {
    if one == other { Ok(()) } else { Err(format!("one message, two sequence numbers: {one} and {other}")) }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
        eprintln!("usage: chat_check GATEWAY_A GATEWAY_B [--resume]");
        return std::process::ExitCode::from(2);
    };
    match run(a, b, args.iter().any(|arg| arg == "--resume")).await {
        Ok(()) => {
            println!("PASS: messages crossed between the gateways through ringkv pub/sub");
            std::process::ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("FAIL: {reason}");
            std::process::ExitCode::FAILURE
        }
    }
}
