//! Flag > file > default, the file's errors, and `render`'s output read back.
//! The environment's place in the order is tested on the real binaries
//! (`tests/tests/settings.rs`): setting variables in this multi-threaded test
//! process would race with the other tests.

use std::io::Write;

use clap::Parser;

use super::*;

/// A stand-in for a server's settings.
#[derive(Debug, Parser)]
struct Args {
    /// Required, like a node's id.
    #[arg(long)]
    id: u64,
    /// With a range check, like the node's tunables.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    heartbeat_ms: u64,
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    #[arg(long)]
    log_json: bool,
    #[arg(long)]
    metrics_listen: Option<String>,
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    #[arg(long)]
    print_config: bool,
    /// Test-only: never from a file.
    #[arg(long, hide = true)]
    enable_test_faults: bool,
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

fn load(argv: &[&str]) -> Result<Loaded<Args>, clap::Error> {
    parse::<Args, _, _>(std::iter::once("server").chain(argv.iter().copied()))
}

fn source_of(loaded: &Loaded<Args>, name: &str) -> Source {
    loaded.effective.iter().find(|e| e.name == name).expect(name).source
}

#[test]
fn the_file_supplies_values_and_flags_override_them() {
    let config = file("id = 7\nheartbeat-ms = 250\nnodes = [\"a:1\", \"b:2\"]\nlog-json = true\n");
    let path = config.path().to_str().expect("utf-8 path");
    let loaded = load(&["--config", path]).expect("file only");
    assert_eq!(loaded.settings.id, 7);
    assert_eq!(loaded.settings.heartbeat_ms, 250);
    assert_eq!(loaded.settings.nodes, ["a:1", "b:2"]);
    assert!(loaded.settings.log_json);
    assert_eq!(source_of(&loaded, "heartbeat-ms"), Source::File);
    assert_eq!(source_of(&loaded, "metrics-listen"), Source::Default);

    let loaded =
        load(&["--heartbeat-ms", "300", &format!("--config={path}"), "--nodes", "c:3"]).expect("flags");
    assert_eq!(loaded.settings.heartbeat_ms, 300);
    assert_eq!(loaded.settings.nodes, ["c:3"], "a flag replaces the file's list, it does not extend it");
    assert_eq!(loaded.settings.id, 7);
    assert_eq!(source_of(&loaded, "heartbeat-ms"), Source::Flag);
    assert_eq!(source_of(&loaded, "id"), Source::File);
}

#[test]
fn without_a_file_the_defaults_and_requirements_stand() {
    let loaded = load(&["--id", "1"]).expect("flags");
    assert_eq!(loaded.settings.heartbeat_ms, 100);
    assert_eq!(source_of(&loaded, "heartbeat-ms"), Source::Default);
    let err = load(&[]).expect_err("--id is required").to_string();
    assert!(err.contains("--id"), "{err}");
}

#[test]
fn a_bad_file_value_names_the_file_and_the_setting() {
    for (text, expect) in [
        ("id = 1\nheartbeat-ms = 0\n", "heartbeat-ms"),
        ("id = 1\nheartbeat-ms = \"fast\"\n", "heartbeat-ms"),
        ("id = -1\n", "`id`"),
        ("id = 1\nnodes = [[\"a\"]]\n", "`nodes`"),
        ("id = 1\nheartbeat-ms = [1, 2]\n", "`heartbeat-ms`"),
        ("id = 1\nlog-json = \"maybe\"\n", "`log-json`"),
    ] {
        let config = file(text);
        let path = config.path().to_str().expect("utf-8 path");
        let err = load(&["--config", path]).expect_err(text).to_string();
        assert!(err.contains(path) && err.contains(expect), "{text:?}: {err}");
    }
}

#[test]
fn unknown_hidden_and_misspelt_keys_are_refused() {
    for key in [
        "heartbeat_ms = 1",
        "hartbeat-ms = 1",
        "enable-test-faults = true",
        "config = \"x\"",
        "help = true",
        "print-config = true",
    ] {
        let config = file(&format!("id = 1\n{key}\n"));
        let path = config.path().to_str().expect("utf-8 path");
        let err = load(&["--config", path]).expect_err(key).to_string();
        assert!(err.contains("unknown setting"), "{key}: {err}");
    }
}

#[test]
fn a_missing_or_malformed_file_is_an_error_naming_it() {
    let err = load(&["--config", "/nonexistent/ringkv.toml", "--id", "1"]).expect_err("missing").to_string();
    assert!(err.contains("/nonexistent/ringkv.toml"), "{err}");
    let config = file("id = \n");
    let path = config.path().to_str().expect("utf-8 path");
    let err = load(&["--config", path]).expect_err("malformed").to_string();
    assert!(err.contains("not valid TOML") && err.contains(path), "{err}");
}

#[test]
fn rendered_settings_read_back_as_the_same_settings() {
    let loaded = load(&[
        "--print-config",
        "--id",
        "9",
        "--nodes",
        "a:1,b:2",
        "--log-json",
        "--metrics-listen",
        "0.0.0.0:9100",
    ])
    .expect("flags");
    let rendered = render(&loaded.effective, &[]);
    assert!(rendered.starts_with("id = 9  # flag\n"), "declaration order: {rendered}");
    assert!(!rendered.contains("print-config"), "an action, not a setting: {rendered}");
    assert!(rendered.contains("# config (not set)") || !rendered.contains("config ="), "{rendered}");
    let config = file(&rendered);
    let path = config.path().to_str().expect("utf-8 path");
    let again = load(&["--config", path]).expect("rendered file parses");
    assert_eq!(again.settings.id, 9);
    assert_eq!(again.settings.nodes, ["a:1", "b:2"]);
    assert!(again.settings.log_json);
    assert_eq!(again.settings.metrics_listen.as_deref(), Some("0.0.0.0:9100"));
    assert_eq!(again.settings.heartbeat_ms, 100);
}

#[test]
fn secrets_render_redacted() {
    let effective =
        vec![Effective { name: "kv-token".into(), values: vec!["hunter2".into()], source: Source::Env }];
    let rendered = render(&effective, &["-token"]);
    assert!(!rendered.contains("hunter2") && rendered.contains("<redacted>"), "{rendered}");
}

#[test]
fn env_names_follow_the_flag() {
    assert_eq!(env_name("heartbeat-ms"), "RINGKV_HEARTBEAT_MS");
    assert_eq!(env_name(CONFIG_FLAG), "RINGKV_CONFIG");
}
