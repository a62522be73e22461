//! A plain round-robin TCP proxy, the "load balancer" of
//! `scripts/session-demo.sh`: each new connection goes to the next backend;
//! a backend that refuses the connection is skipped for that connection.
//! It knows nothing about sessions, which is the point.
//!
//! ```text
//! cargo run -p ringkv-client --example rr_proxy -- 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().ok_or("usage: rr_proxy LISTEN BACKEND...")?;
    let backends: Arc<Vec<String>> = Arc::new(args.collect());
    if backends.is_empty() {
        return Err("usage: rr_proxy LISTEN BACKEND...".into());
    }
    let listener = TcpListener::bind(&listen).await.map_err(|e| format!("listen {listen}: {e}"))?;
    println!("proxy on {listen} -> {}", backends.join(", "));
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut client, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let first = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..backends.len() {
                let backend = &backends[(first + i) % backends.len()];
                if let Ok(mut server) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}
