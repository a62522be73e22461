//! TLS, tokens and peer authentication on real processes: a cluster that
//! requires them serves the callers that present them, refuses every other
//! call with UNAUTHENTICATED or PERMISSION_DENIED (or a failed handshake), and
//! a refused call changes nothing. No secret appears in any log, even at debug
//! level. A token rotates node by node with no call refused between nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringkv_client::{Client, ClientOptions, Consistency, Credentials, Error, PutOptions, Token, tls};
use ringkv_proto::v1::RaftRequest;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_tests::{Cluster, Process};
use tonic::Code;

const KV_TOKEN: &str = "kv-0123456789abcdef-kv";
const ADMIN_TOKEN: &str = "admin-0123456789abcdef-admin";
const PEER_TOKEN: &str = "peer-0123456789abcdef-peer";

/// A throwaway CA with one certificate for every process (valid for
/// 127.0.0.1 and localhost, as server and as client), and a second, unrelated
/// CA that callers must not be fooled by.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    rogue_ca: PathBuf,
    kv_token: PathBuf,
    admin_token: PathBuf,
    peer_token: PathBuf,
}

fn issue(dir: &Path, name: &str) -> (PathBuf, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("write CA");
    (path, rcgen::Issuer::new(params, key))
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, issuer) = issue(dir.path(), "ringkv-test-ca");
    let (rogue_ca, _) = issue(dir.path(), "rogue-ca");
    let key = rcgen::KeyPair::generate().expect("node key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign the node certificate");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Pki {
        cert: write("node.pem", &cert.pem()),
        key: write("node.key", &key.serialize_pem()),
        kv_token: write("kv.token", &format!("{KV_TOKEN}\n")),
        admin_token: write("admin.token", &format!("{ADMIN_TOKEN}\n")),
        peer_token: write("peer.token", PEER_TOKEN),
        ca,
        rogue_ca,
        _dir: dir,
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn client(addrs: Vec<String>, ca: Option<&Path>, token: Option<&str>, timeout: Duration) -> Client {
    let credentials = Credentials::default()
        .with_tls(ca.map(|ca| tls::client_config(&std::fs::read(ca).expect("read CA"))))
        .with_token(token.map(|t| Token::new(t).expect("valid token")));
    let options = ClientOptions { request_timeout: timeout, credentials, ..ClientOptions::default() };
    Client::connect(addrs, options).expect("client")
}

fn code(err: &Error) -> Option<Code> {
    match err {
        Error::Other { code, .. } => Some(*code),
        _ => None,
    }
}

/// Forms the cluster with the admin credentials and waits until a write
/// through `kv` succeeds.
async fn form(cluster: &Cluster, admin: &Client, kv: &Client) {
    let nodes = cluster.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
    admin.init_cluster(nodes, 4, 3).await.unwrap_or_else(|e| panic!("init: {e}\n{}", cluster.logs()));
    kv.put("ready", "yes", PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("first write: {e}\n{}", cluster.logs()));
}

/// A formed 3-node cluster with all three tokens and no TLS, and a client
/// holding the KV token.
async fn tokens_without_tls(pki: &Pki) -> (Cluster, Client) {
    let flags = [
        "--kv-token-file",
        path(&pki.kv_token),
        "--admin-token-file",
        path(&pki.admin_token),
        "--peer-token-file",
        path(&pki.peer_token),
    ];
    let cluster = Cluster::start(3, &flags).await;
    let long = Duration::from_secs(60);
    let admin = client(cluster.addrs(), None, Some(ADMIN_TOKEN), long);
    let kv = client(cluster.addrs(), None, Some(KV_TOKEN), long);
    form(&cluster, &admin, &kv).await;
    (cluster, kv)
}

/// A Raft call with these credentials: what the guard answers (the payload is
/// never looked at when it refuses).
async fn raft_call(addr: &str, credentials: &Credentials) -> Code {
    let endpoint = credentials.endpoint(addr).expect("endpoint").connect_timeout(Duration::from_secs(5));
    let mut raft = RaftClient::new(credentials.connect_lazy(endpoint));
    match raft.vote(RaftRequest::default()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn absent(kv: &Client, keys: &[&'static str]) {
    for key in keys {
        let found = kv.get(*key, Consistency::Linearizable).await.expect("read back");
        assert!(found.is_none(), "{key} was written by a refused call");
    }
}

/// The call never got through: no TLS session, so no gRPC answer at all (a
/// plain-text client reads the TLS alert as a broken HTTP/2 connection).
fn no_connection(err: &Error) -> bool {
    match err {
        Error::Transport(_) | Error::Unavailable(_) | Error::DeadlineExceeded => true,
        Error::Other { code: Code::Internal, message } => message.contains("h2 protocol error"),
        _ => false,
    }
}

fn assert_no_secret(logs: &str) {
    for secret in [KV_TOKEN, ADMIN_TOKEN, PEER_TOKEN, "PRIVATE KEY"] {
        assert!(!logs.contains(secret), "a secret ({}...) is in the logs", &secret[..6]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_tokens_and_peer_certificates() {
    let pki = pki();
    // The settings come from all three places, as an operator would mix them:
    // TLS files from a config file, --peer-mtls as a flag, the token files
    // from the environment.
    let config = pki._dir.path().join("ringkv.toml");
    std::fs::write(
        &config,
        format!(
            "tls-cert = {:?}\ntls-key = {:?}\ntls-ca = {:?}\n",
            path(&pki.cert),
            path(&pki.key),
            path(&pki.ca)
        ),
    )
    .expect("write config");
    let flags = ["--config", path(&config), "--peer-mtls"];
    let debug = [
        ("RUST_LOG", "debug"),
        ("RINGKV_KV_TOKEN_FILE", path(&pki.kv_token)),
        ("RINGKV_ADMIN_TOKEN_FILE", path(&pki.admin_token)),
    ];
    let mut cluster = Cluster::start_with_env(3, &flags, &debug).await;
    let nodes = cluster.addrs();
    let ca = Some(pki.ca.as_path());
    let long = Duration::from_secs(60);
    let admin = client(nodes.clone(), ca, Some(ADMIN_TOKEN), long);
    let kv = client(nodes.clone(), ca, Some(KV_TOKEN), long);
    form(&cluster, &admin, &kv).await;

    let index = cluster.start_router_with(&flags, &debug).await;
    let router = cluster.routers[index].addr.clone();
    let via_router = client(vec![router.clone()], ca, Some(KV_TOKEN), long);
    via_router.put("k", "through the router", PutOptions::default()).await.expect("routed write");
    let read = kv.get("k", Consistency::Linearizable).await.expect("read").expect("found");
    assert_eq!(read.value, "through the router");
    let status = kv.cluster_status().await.expect("the KV token may read the cluster's status");
    let epoch = status.epoch;

    let short = Duration::from_secs(3);
    // No token, an unknown token: UNAUTHENTICATED, on nodes and on the router.
    for target in [nodes.clone(), vec![router.clone()]] {
        let anonymous = client(target.clone(), ca, None, short);
        let err = anonymous.put("refused-1", "x", PutOptions::default()).await.expect_err("no token");
        assert_eq!(code(&err), Some(Code::Unauthenticated), "{err}");
        let forged = client(target.clone(), ca, Some("not-the-kv-token-at-all"), short);
        let err = forged.put("refused-2", "x", PutOptions::default()).await.expect_err("bad token");
        assert_eq!(code(&err), Some(Code::Unauthenticated), "{err}");
        // The KV token may not change the cluster.
        let kv_only = client(target, ca, Some(KV_TOKEN), short);
        let err = kv_only.drain_node(3, 1, 1).await.expect_err("KV token on Admin");
        assert_eq!(code(&err), Some(Code::PermissionDenied), "{err}");
    }
    // Plain text to a TLS port, and a caller trusting another CA: no handshake.
    let plain = client(nodes.clone(), None, Some(KV_TOKEN), short);
    let err = plain.put("refused-3", "x", PutOptions::default()).await.expect_err("plain text to TLS");
    assert!(no_connection(&err), "{err:?}");
    let fooled = client(nodes.clone(), Some(&pki.rogue_ca), Some(KV_TOKEN), short);
    let err = fooled.put("refused-4", "x", PutOptions::default()).await.expect_err("an unknown CA");
    assert!(no_connection(&err), "{err:?}");
    // Raft: only a caller with a certificate the CA signed (a peer).
    let ca_pem = std::fs::read(&pki.ca).expect("read CA");
    let server_only = Credentials::default().with_tls(Some(tls::client_config(&ca_pem)));
    assert_eq!(raft_call(&nodes[0], &server_only).await, Code::Unauthenticated);
    let with_admin = server_only.clone().with_token(Some(Token::new(ADMIN_TOKEN).expect("valid")));
    assert_eq!(raft_call(&nodes[0], &with_admin).await, Code::PermissionDenied);

    // Nothing a refused call asked for happened.
    absent(&kv, &["refused-1", "refused-2", "refused-3", "refused-4"]).await;
    let after = admin.cluster_status().await.expect("status");
    assert_eq!(after.epoch, epoch, "a refused Admin call changed the cluster map");
    assert!(after.nodes.iter().all(|n| n.state != "draining"), "{after:?}");

    // Peers authenticated each other by certificate: the cluster kept working
    // through a leader change.
    cluster.node(1).kill();
    kv.put("after-kill", "v", PutOptions::default()).await.expect("write after a node died");
    let mut logs = cluster.logs();
    logs.push_str(&cluster.routers[index].log());
    assert!(logs.contains("DEBUG"), "the processes logged at debug level");
    assert_no_secret(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_token_guards_raft_without_tls() {
    let pki = pki();
    let (cluster, _kv) = tokens_without_tls(&pki).await;
    let nodes = cluster.addrs();
    let token = |t: &str| Credentials::default().with_token(Some(Token::new(t).expect("valid")));
    assert_eq!(raft_call(&nodes[1], &Credentials::default()).await, Code::Unauthenticated);
    assert_eq!(raft_call(&nodes[1], &token(ADMIN_TOKEN)).await, Code::PermissionDenied);
    assert_eq!(raft_call(&nodes[1], &token(KV_TOKEN)).await, Code::PermissionDenied);
    // The peer token passes the guard (the empty request itself is then
    // refused by the Raft service, not by the guard).
    let code = raft_call(&nodes[1], &token(PEER_TOKEN)).await;
    assert!(!matches!(code, Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable), "{code:?}");
    assert!(cluster.logs().contains("tokens are checked but TLS is off"), "the clear-text warning");
    assert_no_secret(&cluster.logs());
}

/// Rotating the peer token the way docs/operations.md says, one node at a
/// time, without the cluster ever refusing itself: every file is first
/// "OLD, NEW" (present the old, accept both), then "NEW, OLD", then "NEW".
/// After the first node of each round restarts, the third node is stopped, so
/// a write needs the restarted node and one that has not restarted yet to
/// accept each other's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_token_rotates_one_node_at_a_time_without_refusals() {
    const NEW_PEER_TOKEN: &str = "peer-fedcba9876543210-new";
    let pki = pki();
    let (mut cluster, kv) = tokens_without_tls(&pki).await;
    let nodes = cluster.addrs();
    let token = |t: &str| Credentials::default().with_token(Some(Token::new(t).expect("valid")));
    let passes_the_guard = |code: Code| !matches!(code, Code::Unauthenticated | Code::PermissionDenied);

    for (round, file) in [
        format!("{PEER_TOKEN}\n{NEW_PEER_TOKEN}\n"),
        format!("{NEW_PEER_TOKEN}\n{PEER_TOKEN}\n"),
        format!("{NEW_PEER_TOKEN}\n"),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&pki.peer_token, file).expect("write the peer token file");
        cluster.node(1).stop().await;
        cluster.node(1).start().await;
        cluster.node(3).stop().await;
        kv.put(format!("rotation-{round}"), "v", PutOptions::default()).await.unwrap_or_else(|e| {
            panic!("round {round}: nodes 1 and 2 refused each other: {e}\n{}", cluster.logs())
        });
        cluster.node(3).start().await;
        cluster.node(2).stop().await;
        cluster.node(2).start().await;
        for addr in &nodes {
            let old = raft_call(addr, &token(PEER_TOKEN)).await;
            let new = raft_call(addr, &token(NEW_PEER_TOKEN)).await;
            assert!(passes_the_guard(new), "round {round}, {addr}: the new token refused: {new:?}");
            assert_eq!(passes_the_guard(old), round < 2, "round {round}, {addr}: the old token: {old:?}");
        }
    }
    kv.put("rotated", "v", PutOptions::default()).await.expect("a write once every node has rotated");
    for round in 0..3 {
        assert!(
            kv.get(format!("rotation-{round}"), Consistency::Linearizable).await.expect("read").is_some()
        );
    }
    let logs = cluster.logs();
    assert_no_secret(&logs);
    assert!(!logs.contains(NEW_PEER_TOKEN), "the new peer token is in the logs");
}

#[tokio::test]
async fn bad_security_settings_stop_a_server_at_start_naming_them() {
    let pki = pki();
    let root = tempfile::tempdir().expect("temp dir");
    let short = root.path().join("short.token");
    std::fs::write(&short, "abc\n").expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--kv-token-file", path(&pki.kv_token)], "--admin-token-file"),
        (vec!["--admin-token-file", path(&short)], "--admin-token-file"),
        (vec!["--admin-token-file", "/nonexistent/token"], "/nonexistent/token"),
        (vec!["--tls-cert", path(&pki.cert), "--tls-ca", path(&pki.ca)], "--tls-key"),
        (
            vec!["--tls-cert", path(&pki.kv_token), "--tls-key", path(&pki.key), "--tls-ca", path(&pki.ca)],
            "--tls-cert",
        ),
        (
            vec!["--admin-token-file", path(&pki.admin_token), "--peer-token-file", path(&pki.admin_token)],
            "differ",
        ),
    ];
    for (i, (args, expect)) in cases.into_iter().enumerate() {
        let mut node = Process::router(i as u64, root.path(), &["127.0.0.1:1".to_string()]);
        node.add_args(&args);
        let (status, log) = node.start_expecting_failure().await;
        assert!(!status.success(), "{args:?} started");
        assert!(log.contains(expect), "{args:?}: expected {expect:?} in\n{log}");
        assert!(!log.contains("abc\n") && !log.contains(ADMIN_TOKEN), "{log}");
    }
}
