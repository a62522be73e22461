//! A stateless web app whose sessions live in ringkv: run several copies
//! behind any load balancer, kill one, and its users stay logged in.
//!
//! The sessions go through `tower-sessions` with [`RingkvStore`], a
//! `SessionStore` backed by the ringkv client library:
//! - a new session is written with `if_absent` (an id collision picks another
//!   id instead of overwriting someone's session) and an idle TTL;
//! - loading one is `get_and_touch`: one linearizable read that also slides
//!   the idle TTL, through Raft only when half of it is gone, so a busy
//!   session costs reads, not writes;
//! - the TTL lives in ringkv (the cookie is a browser-session cookie), so it
//!   holds across app instances and survives a ringkv failover.
//!
//! ```text
//! cargo run -p ringkv-client --example session_app -- \
//!     --listen 127.0.0.1:8081 --ringkv 127.0.0.1:7000 --name app-1
//! curl -c jar -X POST 'http://127.0.0.1:8081/login?user=alice'
//! curl -b jar http://127.0.0.1:8081/me
//! ```
//! `scripts/session-demo.sh` runs three of them behind a round-robin proxy.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ringkv_client::{Client, Condition, Consistency, PutOptions};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// A `tower-sessions` store in ringkv: one key per session,
/// `session:<id>` → the record as JSON, expiring after `idle` without use.
#[derive(Debug, Clone)]
struct RingkvStore {
    client: Client,
    idle: Duration,
}

impl RingkvStore {
    fn key(id: &Id) -> String {
        format!("session:{id}")
    }

    fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
        serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
    }

    fn options(&self, condition: Condition) -> PutOptions {
        PutOptions { ttl_ms: self.idle.as_millis() as u64, condition }
    }
}

fn backend(err: ringkv_client::Error) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

#[async_trait::async_trait]
impl SessionStore for RingkvStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let value = Self::encode(record)?;
            let put = self.client.put(Self::key(&record.id), value, self.options(Condition::IfAbsent));
            if put.await.map_err(backend)?.succeeded {
                return Ok(());
            }
            record.id = Id::default(); // taken: draw another
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let value = Self::encode(record)?;
        self.client
            .put(Self::key(&record.id), value, self.options(Condition::None))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let idle_ms = self.idle.as_millis() as u64;
        let Some(found) = self.client.get_and_touch(Self::key(id), idle_ms).await.map_err(backend)? else {
            return Ok(None);
        };
        let record =
            serde_json::from_slice(&found.value).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(record))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.client.delete(Self::key(id), None).await.map_err(backend)?;
        Ok(())
    }
}

/// This instance's name, so responses show which copy answered.
#[derive(Clone)]
struct App {
    name: String,
}

async fn login(
    State(app): State<App>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<String, (StatusCode, String)> {
    let user =
        query.get("user").filter(|u| !u.is_empty()).ok_or((StatusCode::BAD_REQUEST, "?user=NAME".into()))?;
    session.insert("user", user).await.map_err(internal)?;
    Ok(format!("welcome {user} (logged in at {})\n", app.name))
}

async fn me(State(app): State<App>, session: Session) -> Result<String, (StatusCode, String)> {
    match session.get::<String>("user").await.map_err(internal)? {
        Some(user) => Ok(format!("{user} (answered by {})\n", app.name)),
        None => Err((StatusCode::UNAUTHORIZED, format!("not logged in (answered by {})\n", app.name))),
    }
}

async fn logout(session: Session) -> Result<&'static str, (StatusCode, String)> {
    session.flush().await.map_err(internal)?;
    Ok("bye\n")
}

fn internal(err: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("session store: {err}\n"))
}

/// `--listen ADDR --ringkv ADDR[,ADDR...] --name NAME [--idle-secs N]`
fn args() -> Result<(String, Vec<String>, String, Duration), String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut ringkv, mut name, mut idle) =
        ("127.0.0.1:8081".to_string(), vec!["127.0.0.1:7000".to_string()], "app".to_string(), 1800);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--ringkv" => ringkv = value.split(',').map(str::to_string).collect(),
            "--name" => name = value,
            "--idle-secs" => idle = value.parse().map_err(|e| format!("--idle-secs {value}: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((listen, ringkv, name, Duration::from_secs(idle)))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let (listen, ringkv, name, idle) = args()?;
    let client = Client::connect(ringkv, Default::default()).map_err(|e| e.to_string())?;
    // Fail fast on a wrong address rather than at the first login.
    client.get("session:probe", Consistency::Linearizable).await.map_err(|e| format!("ringkv: {e}"))?;
    let sessions = SessionManagerLayer::new(RingkvStore { client, idle })
        .with_secure(false)
        .with_expiry(Expiry::OnSessionEnd);
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .layer(sessions)
        .with_state(App { name: name.clone() });
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("listen {listen}: {e}"))?;
    println!("{name} listening on {listen}");
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
