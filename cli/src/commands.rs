//! Running one client command (kv, status, cluster, admin) with the client
//! library and printing its answer through [`crate::output`] and
//! [`crate::rebalance_output`].

use std::io::Write;

use std::time::Duration;

use ringkv_client::{
    Client, ClientOptions, Condition, Consistency, Error, EventKind, PutOptions, ResumeToken, WatchStart,
    WatchTarget,
};

use crate::args::{
    AdminCommand, ClientArgs, ClusterCommand, Command, DEFAULT_ADDR, RebalanceAction, RebalanceArgs,
    StatusArgs,
};
use crate::output::{
    self, EXIT_NEGATIVE, EXIT_OK, EXIT_PRECONDITION, Failure, delete_line, init_line, put_line,
};
use crate::rebalance_output as admin_output;

/// Runs one client command, printing its answer to `out` (and `-v` details and
/// `(not found)` to `err`); returns the exit status of an answer, or the failure.
/// `dev`, `node` and `router` are not client commands: `main` runs them.
pub async fn run(
    args: ClientArgs,
    command: Command,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    let is_init = matches!(
        command,
        Command::Cluster(ClusterCommand::Init { .. })
            | Command::Admin(AdminCommand::Backup { .. } | AdminCommand::Restore { .. })
    );
    let default_timeout_ms = if is_init { 60_000 } else { 10_000 };
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(args.timeout_ms.unwrap_or(default_timeout_ms)),
        credentials: args.credentials().map_err(Failure::usage)?,
        ..ClientOptions::default()
    };
    let mut addrs = args.addr;
    if addrs.is_empty() {
        addrs = match &command {
            Command::Cluster(ClusterCommand::Init { nodes, .. })
            | Command::Admin(AdminCommand::Restore { nodes, .. }) => {
                nodes.0.iter().take(1).map(|(_, addr)| addr.clone()).collect()
            }
            _ => vec![DEFAULT_ADDR.to_string()],
        };
    }
    let opts_timeout = opts.request_timeout;
    let client = Client::connect(addrs.clone(), opts).map_err(|e| Failure::from_client(e, &addrs))?;
    let verbose = args.verbose;
    let failed = |e: Error| Failure::from_client(e, &addrs);

    match command {
        Command::Get { key, stale, touch } => {
            let consistency = if stale { Consistency::Stale } else { Consistency::Linearizable };
            let got = match touch {
                Some(ttl_ms) => client.get_and_touch(key, ttl_ms).await,
                None => client.get(key, consistency).await,
            };
            match got.map_err(failed)? {
                Some(got) => {
                    out.write_all(&got.value)?;
                    out.write_all(b"\n")?;
                    if verbose {
                        writeln!(err, "version={} ttl_ms={}", got.version, got.ttl_ms.unwrap_or(0))?;
                    }
                    Ok(EXIT_OK)
                }
                None => {
                    writeln!(err, "(not found)")?;
                    Ok(EXIT_NEGATIVE)
                }
            }
        }
        Command::Put { key, value, ttl_ms, if_absent, if_version, request_id } => {
            let client = with_request_id(&client, request_id);
            let condition = match (if_absent, if_version) {
                (true, _) => Condition::IfAbsent,
                (false, Some(version)) => Condition::IfVersion(version),
                (false, None) => Condition::None,
            };
            let put = client.put(key, value, PutOptions { ttl_ms, condition }).await.map_err(failed)?;
            answer(out, put_line(put))
        }
        Command::Del { key, if_version, request_id } => {
            let client = with_request_id(&client, request_id);
            let deleted = client.delete(key, if_version).await.map_err(failed)?;
            answer(out, delete_line(deleted.deleted, deleted.version))
        }
        Command::Touch { key, ttl_ms, request_id } => {
            let client = with_request_id(&client, request_id);
            let touched = client.touch(key, ttl_ms).await.map_err(failed)?;
            let line = match touched.found {
                true => (format!("OK ttl_ms={}", touched.ttl_ms.unwrap_or(0)), EXIT_OK),
                false => ("(not found)".to_string(), EXIT_NEGATIVE),
            };
            answer(out, line)
        }
        Command::Incr { key, delta, ttl_ms, request_id } => {
            let client = with_request_id(&client, request_id);
            let counter = client.increment(key, delta, ttl_ms).await.map_err(failed)?;
            writeln!(out, "{}", counter.value)?;
            if verbose {
                writeln!(err, "version={}", counter.version)?;
            }
            Ok(EXIT_OK)
        }
        Command::Watch { key, prefix, from, after, count } => {
            let (target, start) = match (key, prefix, after) {
                (_, _, Some(token)) => {
                    let token = decode_token(&token).map_err(failed)?;
                    (token.target().clone(), WatchStart::After(token))
                }
                (Some(key), _, None) => {
                    (WatchTarget::Key(key.into()), from.map_or(WatchStart::Now, WatchStart::Version))
                }
                (None, Some(prefix), None) => (WatchTarget::Prefix(prefix.into()), WatchStart::Now),
                (None, None, None) => return Err(Failure::usage("watch needs a KEY, --prefix or --after")),
            };
            watch(&client, target, start, count, verbose, out, err).await.map_err(failed)
        }
        Command::Publish { channel, message, request_id } => {
            let client = with_request_id(&client, request_id);
            let seq = client.publish(channel, message).await.map_err(failed)?;
            writeln!(out, "{seq}")?;
            Ok(EXIT_OK)
        }
        Command::Subscribe { channel, from, count } => {
            subscribe(&client, channel, from.unwrap_or(0), count, out).await.map_err(failed)
        }
        Command::Cluster(ClusterCommand::Init { nodes, shards, replicas }) => {
            if replicas as usize > nodes.0.len() {
                let count = nodes.0.len();
                return Err(Failure::usage(format!(
                    "--replicas {replicas} is more than the {count} nodes given"
                )));
            }
            let created = client.init_cluster(nodes.0, shards, replicas).await.map_err(|err| match err {
                Error::AlreadyExists(reason) => Failure::new(
                    EXIT_PRECONDITION,
                    format!("cluster init refused: already initialized: {reason}"),
                ),
                err => {
                    let failure = Failure::from_client(err, &addrs);
                    Failure { message: format!("cluster init failed: {}", failure.message), ..failure }
                }
            })?;
            answer(out, (init_line(&created), EXIT_OK))
        }
        Command::Status(StatusArgs { json })
        | Command::Cluster(ClusterCommand::Status(StatusArgs { json })) => {
            let status = client.cluster_status().await.map_err(failed)?;
            let text = if json { output::status_json_text(&status) } else { output::status_text(&status) };
            out.write_all(text.as_bytes())?;
            Ok(EXIT_OK)
        }
        Command::Admin(AdminCommand::Backup { dir }) => {
            crate::backup::backup(&client, &dir, opts_timeout, out).await?;
            Ok(EXIT_OK)
        }
        Command::Admin(AdminCommand::Restore { dir, nodes, replicas }) => {
            crate::backup::restore(&dir, nodes.0, replicas, opts_timeout, client.credentials(), out).await?;
            Ok(EXIT_OK)
        }
        Command::Admin(admin) => {
            let text = run_admin(&client, admin, &addrs).await?;
            out.write_all(text.as_bytes())?;
            Ok(EXIT_OK)
        }
        Command::Dev(_) | Command::Node(_) | Command::Router(_) => {
            unreachable!("main runs dev, node and router itself")
        }
    }
}

/// Runs one `ringkv admin` command; returns the text to print. `addrs` are the
/// addresses the command was given, for hints.
async fn run_admin(client: &Client, command: AdminCommand, addrs: &[String]) -> Result<String, Failure> {
    let failed = |what: &str| {
        let what = what.to_string();
        move |err: Error| admin_failure(&what, err, addrs)
    };
    match command {
        AdminCommand::AddNode { id, addr } => {
            let added = client.add_node(id, &addr).await.map_err(failed("add-node"))?;
            Ok(admin_output::add_node_text(id, &addr, &added))
        }
        AdminCommand::Rebalance(RebalanceArgs { action: Some(action), .. }) => {
            let status = match action.control() {
                None => client.rebalance_status().await.map_err(failed("rebalance status"))?,
                Some(control) => {
                    let what = format!("rebalance {control}");
                    client.control_rebalance(control).await.map_err(failed(&what))?
                }
            };
            Ok(match action {
                RebalanceAction::Status { json: true } => admin_output::rebalance_status_json_text(&status),
                _ => admin_output::rebalance_status_text(&status),
            })
        }
        AdminCommand::Rebalance(RebalanceArgs { action: None, dry_run: true, .. }) => {
            let plan = client.plan_rebalance().await.map_err(failed("rebalance plan"))?;
            Ok(admin_output::plan_text(&plan))
        }
        AdminCommand::Rebalance(RebalanceArgs {
            action: None,
            dry_run: false,
            max_in_flight,
            max_per_node,
            expected_epoch,
        }) => {
            // Without --expected-epoch, commit the plan of the map as it is now;
            // an empty plan is not committed, so the last plan's record stays.
            let epoch = match expected_epoch {
                Some(epoch) => epoch,
                None => {
                    let plan = client.plan_rebalance().await.map_err(failed("rebalance plan"))?;
                    if plan.moves.is_empty() {
                        return Ok(admin_output::nothing_to_move_text(plan.epoch));
                    }
                    plan.epoch
                }
            };
            // 0 asks the nodes for their defaults.
            let (max_in_flight, max_per_node) = (max_in_flight.unwrap_or(0), max_per_node.unwrap_or(0));
            let status = client
                .start_rebalance(epoch, max_in_flight, max_per_node)
                .await
                .map_err(failed("rebalance"))?;
            Ok(match status.moves.is_empty() {
                true => admin_output::nothing_to_move_text(status.base_epoch),
                false => admin_output::committed_text(&status),
            })
        }
        AdminCommand::Drain { node, max_in_flight, max_per_node } => {
            let (in_flight, per_node) = (max_in_flight.unwrap_or(0), max_per_node.unwrap_or(0));
            let status = client.drain_node(node, in_flight, per_node).await.map_err(failed("drain"))?;
            Ok(admin_output::drain_text(node, &status))
        }
        AdminCommand::RemoveNode { node } => {
            let removed = client.remove_node(node).await.map_err(failed("remove-node"))?;
            Ok(admin_output::remove_node_line(node, removed.epoch))
        }
        AdminCommand::TransferLeader { shard, node } => {
            let moved = client.transfer_leader(shard, node).await.map_err(failed("transfer-leader"))?;
            Ok(admin_output::transfer_leader_line(shard, &moved))
        }
        AdminCommand::BalanceLeaders => {
            let balanced = client.balance_leaders().await.map_err(failed("balance-leaders"))?;
            Ok(admin_output::balance_leaders_text(&balanced))
        }
        AdminCommand::Backup { .. } | AdminCommand::Restore { .. } => {
            unreachable!("run handles backup and restore: they print as they go")
        }
    }
}

/// An admin call's error, named after the command: `drain refused: <why>` when
/// the cluster said no (its reason already says what to do), `drain failed:
/// <error>` when no answer came.
fn admin_failure(what: &str, err: Error, addrs: &[String]) -> Failure {
    let exit = output::exit_status(&err);
    match err {
        Error::FailedPrecondition(reason) | Error::AlreadyExists(reason) | Error::NotFound(reason) => {
            Failure::new(exit, format!("{what} refused: {reason}"))
        }
        err => {
            let failure = Failure::from_client(err, addrs);
            Failure { message: format!("{what} failed: {}", failure.message), ..failure }
        }
    }
}

fn answer(out: &mut impl Write, (line, exit): (String, u8)) -> Result<u8, Failure> {
    writeln!(out, "{line}")?;
    Ok(exit)
}

/// A resume token as `watch -v` prints it: hex.
fn decode_token(hex: &str) -> Result<ResumeToken, Error> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    match bytes {
        Some(bytes) if hex.len().is_multiple_of(2) => ResumeToken::decode(&bytes),
        _ => Err(Error::InvalidArgument("a resume token is the hex `watch -v` printed".into())),
    }
}

fn encode_token(token: &ResumeToken) -> String {
    token.encode().iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints a watch's events until `count` of them (or forever).
async fn watch(
    client: &Client,
    target: WatchTarget,
    start: WatchStart,
    count: Option<usize>,
    verbose: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Error> {
    let io = |e: std::io::Error| Error::Transport(e.to_string());
    let mut watch = client.watch(target, start).await?;
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        let Some(batch) = watch.next().await else { break };
        for event in batch?.events {
            let key = String::from_utf8_lossy(&event.key);
            let line = match event.kind {
                EventKind::Put => {
                    format!("PUT {key} version={} {}", event.version, String::from_utf8_lossy(&event.value))
                }
                EventKind::Delete => format!("DELETE {key} version={}", event.version),
                EventKind::Expired => format!("EXPIRED {key} version={}", event.version),
            };
            writeln!(out, "{line}").and_then(|()| out.flush()).map_err(io)?;
            printed += 1;
        }
        if verbose {
            writeln!(err, "token={}", encode_token(watch.token())).map_err(io)?;
        }
    }
    Ok(EXIT_OK)
}

/// Prints a channel's messages until `count` of them (or forever).
async fn subscribe(
    client: &Client,
    channel: String,
    from_seq: u64,
    count: Option<usize>,
    out: &mut impl Write,
) -> Result<u8, Error> {
    let mut subscription = client.subscribe(channel, from_seq).await?;
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        let Some(message) = subscription.next().await else { break };
        let message = message?;
        writeln!(out, "{} {}", message.seq, String::from_utf8_lossy(&message.payload))
            .and_then(|()| out.flush())
            .map_err(|e| Error::Transport(e.to_string()))?;
        printed += 1;
    }
    Ok(EXIT_OK)
}

/// The client for one write: with the operator's request id, if given.
fn with_request_id(client: &Client, request_id: Option<String>) -> Client {
    match request_id {
        Some(id) => client.with_request_id(id.into()),
        None => client.clone(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;
    use crate::output::{EXIT_UNAVAILABLE, EXIT_USAGE};

    async fn run_args(args: &[&str]) -> (Result<u8, Failure>, String, String) {
        let cli = Cli::try_parse_from(std::iter::once("ringkv").chain(args.iter().copied())).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = run(cli.client, cli.command, &mut out, &mut err).await;
        (result, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[tokio::test]
    async fn invalid_arguments_fail_before_connecting() {
        // Nothing listens on the address; the empty key must be refused first.
        let (result, out, _) = run_args(&["--addr", "127.0.0.1:9", "get", ""]).await;
        assert_eq!(result, Err(Failure::new(EXIT_USAGE, "invalid argument: key is empty")));
        assert!(out.is_empty());
        let (result, _, _) = run_args(&["cluster", "init", "--nodes", "1=a:1,2=b:1"]).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.exit, EXIT_USAGE);
        assert!(failure.message.contains("--replicas 3 is more than the 2 nodes"));
    }

    #[tokio::test]
    async fn nothing_listening_is_unavailable_with_a_hint() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let (result, _, _) = run_args(&["--addr", &closed, "--timeout-ms", "2000", "get", "k"]).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.exit, EXIT_UNAVAILABLE, "{failure:?}");
        assert!(failure.message.starts_with("cannot connect"), "{failure:?}");
        assert!(failure.render().contains(&format!("hint: nothing answers at {closed};")), "{failure:?}");
    }
}
