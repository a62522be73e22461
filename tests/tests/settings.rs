//! Settings on the real binaries: a flag beats its environment variable, which
//! beats the config file, which beats the default; a bad value from any of
//! them stops the process at start with a message naming the setting.
//! (`ringkv-settings` unit-tests the file handling in detail.)

use std::io::Write;
use std::process::{Command, Output};

use ringkv_tests::test_bin;

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(test_bin(bin));
    command.args(args);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("RINGKV_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run the binary")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = config_file(
        "id = 4\ndata-dir = \"/var/lib/ringkv\"\nheartbeat-ms = 40\nelection-timeout-min-ms = 400\n\
         election-timeout-max-ms = 800\nsnapshot-every-entries = 5000\n",
    );
    let path = file.path().to_str().expect("utf-8 path");
    let env = [("RINGKV_ELECTION_TIMEOUT_MIN_MS", "500"), ("RINGKV_SNAPSHOT_EVERY_ENTRIES", "6000")];
    let printed = stdout(&run(
        "ringkv-test-node",
        &["--config", path, "--snapshot-every-entries", "7000", "--print-config"],
        &env,
    ));
    for line in [
        "id = 4  # config file",
        "heartbeat-ms = 40  # config file",
        "election-timeout-min-ms = 500  # environment RINGKV_ELECTION_TIMEOUT_MIN_MS",
        "election-timeout-max-ms = 800  # config file",
        "snapshot-every-entries = 7000  # flag",
        "log-kept-after-snapshot = 1000  # default",
        "data-dir = \"/var/lib/ringkv\"  # config file",
    ] {
        assert!(printed.lines().any(|l| l == line), "missing {line:?} in\n{printed}");
    }
    // The printed settings are a config file that reads back the same.
    let again = config_file(&printed);
    let reprinted = stdout(&run(
        "ringkv-test-node",
        &["--config", again.path().to_str().expect("utf-8"), "--print-config"],
        &[],
    ));
    let values = |text: &str| -> Vec<String> {
        text.lines().map(|l| l.split("  #").next().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(values(&reprinted), values(&printed));
}

#[test]
fn the_config_file_may_come_from_the_environment() {
    let file = config_file("nodes = [\"10.0.0.1:7001\", \"10.0.0.2:7001\"]\nrequest-timeout-ms = 2500\n");
    let path = file.path().to_str().expect("utf-8 path");
    let printed = stdout(&run("ringkv-test-router", &["--print-config"], &[("RINGKV_CONFIG", path)]));
    assert!(printed.contains("nodes = [\"10.0.0.1:7001\", \"10.0.0.2:7001\"]  # config file"), "{printed}");
    assert!(printed.contains("request-timeout-ms = 2500  # config file"), "{printed}");
    // A flag's list replaces the file's.
    let printed =
        stdout(&run("ringkv-test-router", &["--print-config", "--nodes", "h:1"], &[("RINGKV_CONFIG", path)]));
    assert!(printed.contains("nodes = \"h:1\"  # flag"), "{printed}");
}

#[test]
fn bad_values_are_refused_at_start_naming_the_setting() {
    let base = ["--id", "1", "--data-dir", "/nonexistent/never-created"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    /// Arguments, environment, the setting the error must name.
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (with(&["--heartbeat-ms", "often"]), vec![], "--heartbeat-ms"),
        (with(&[]), vec![("RINGKV_HEARTBEAT_MS", "-5")], "--heartbeat-ms"),
        (with(&[]), vec![("RINGKV_REQUEST_ID_RETENTION_MS", "5")], "--request-id-retention-ms"),
        (with(&["--election-timeout-min-ms", "300"]), vec![], "--election-timeout-min-ms"),
        (with(&["--heartbeat-ms", "200"]), vec![], "--heartbeat-ms"),
        (with(&["--touch-refresh-fraction", "2"]), vec![], "--touch-refresh-fraction"),
    ];
    for (args, env, name) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = refused(&run("ringkv-test-node", &args, &env));
        assert!(err.contains(name), "{args:?} {env:?}: {err}");
    }
    let file = config_file("id = 1\ndata-dir = \"/x\"\nwatch-retention-events = \"lots\"\n");
    let path = file.path().to_str().expect("utf-8 path");
    let err = refused(&run("ringkv-test-node", &["--config", path], &[]));
    assert!(err.contains(path) && err.contains("watch-retention-events"), "{err}");
    let file = config_file("id = 1\ndata-dir = \"/x\"\nheartbeat = 50\n");
    let path = file.path().to_str().expect("utf-8 path");
    let err = refused(&run("ringkv-test-node", &["--config", path], &[]));
    assert!(err.contains("`heartbeat`") && err.contains("unknown setting"), "{err}");
    let err = refused(&run("ringkv-test-router", &["--nodes", "a:1", "--request-timeout-ms", "0"], &[]));
    assert!(err.contains("--request-timeout-ms"), "{err}");
}

#[test]
fn help_shows_each_settings_default_and_environment_variable() {
    let help = stdout(&run("ringkv-test-node", &["--help"], &[]));
    assert!(help.contains("[env: RINGKV_HEARTBEAT_MS=] [default: 100]"), "{help}");
    assert!(help.contains("--config <FILE>") && help.contains("Precedence: flag"), "{help}");
    assert!(!help.contains("RINGKV_ENABLE_TEST_FAULTS"), "test-only flags stay hidden: {help}");
}
