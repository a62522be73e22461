//! A stateless chat gateway: browsers hold WebSockets to any copy of it, and
//! the copies relay messages to each other through ringkv pub/sub. Nothing is
//! kept in the gateway: a room is the channel `chat:<room>`, and a browser
//! that reconnects (to this copy or another) passes the last sequence number
//! it saw and misses nothing the channel still retains.
//!
//! `GET /ws/<room>?name=<who>[&from=<seq>]` upgrades to a WebSocket. Each text
//! the browser sends is published as `<who>: <text>`; each message of the
//! room is sent to the browser as `<seq> <who>: <text>`. Through a router,
//! all of a gateway's sockets in one room share one upstream subscription.
//!
//! ```text
//! cargo run -p ringkv-client --example chat_app -- --listen 127.0.0.1:8091 --ringkv 127.0.0.1:7000
//! ```
//! `scripts/chat-demo.sh` runs two of them and checks messages cross over.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use ringkv_client::{Client, ClientOptions, Routing};

/// Who joins, and from where.
struct Join {
    name: String,
    /// Resume from this sequence number (the last one seen + 1); 0 = now.
    from: u64,
}

async fn join(
    State(client): State<Client>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let join = Join {
        name: query.get("name").cloned().unwrap_or_else(|| "anonymous".into()),
        from: query.get("from").and_then(|from| from.parse().ok()).unwrap_or(0),
    };
    upgrade.on_upgrade(move |socket| relay(client, socket, format!("chat:{room}"), join))
}

/// Relays between one browser and the room until either side ends.
async fn relay(client: Client, mut socket: WebSocket, channel: String, join: Join) {
    let mut subscription = match client.subscribe(channel.clone(), join.from).await {
        Ok(subscription) => subscription,
        Err(err) => {
            let _ = socket.send(WsMessage::Text(format!("error: {err}").into())).await;
            return;
        }
    };
    // Tells the browser the room is joined, and where it starts.
    let hello = format!("joined {channel} at {}", subscription.next_seq());
    if socket.send(WsMessage::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let line = format!("{}: {}", join.name, text.as_str());
                    if let Err(err) = client.publish(channel.clone(), line).await {
                        let _ = socket.send(WsMessage::Text(format!("error: {err}").into())).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            message = subscription.next() => match message {
                Some(Ok(message)) => {
                    let line = format!("{} {}", message.seq, String::from_utf8_lossy(&message.payload));
                    if socket.send(WsMessage::Text(line.into())).await.is_err() {
                        return;
                    }
                }
                // Past the retention (or the cluster is gone): the browser
                // must rejoin and re-read.
                Some(Err(err)) => {
                    let _ = socket.send(WsMessage::Text(format!("error: {err}").into())).await;
                    return;
                }
                None => return,
            },
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:8091".to_string();
    let mut ringkv = "127.0.0.1:7000".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--ringkv" => ringkv = value,
            _ => return Err(format!("unknown flag {flag}; use --listen ADDR --ringkv ROUTER").into()),
        }
    }
    // The router's address only, as an app behind a load balancer would.
    let options = ClientOptions {
        routing: Routing::ViaSeeds,
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = Client::connect(vec![ringkv], options)?;
    let app = Router::new().route("/ws/{room}", get(join)).with_state(client);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("chat gateway on {listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
