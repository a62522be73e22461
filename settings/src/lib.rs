//! Settings of the server binaries (`ringkv-node`, `ringkv-router`) from three
//! places, under one set of names:
//!
//! | where | name | example |
//! |---|---|---|
//! | flag | `--heartbeat-ms` | `--heartbeat-ms 100` |
//! | environment | `RINGKV_HEARTBEAT_MS` | `RINGKV_HEARTBEAT_MS=100` |
//! | TOML file (`--config FILE` or `RINGKV_CONFIG`) | `heartbeat-ms` | `heartbeat-ms = 100` |
//!
//! A setting given in several places takes the flag's value, else the
//! environment's, else the file's, else the built-in default — what an
//! operator of etcd or a systemd unit expects: the file is the base, the unit's
//! `Environment=` adjusts it, a flag typed by hand wins.
//!
//! # How
//! The binaries declare their settings once, as clap flags (with their help,
//! default and unit). [`parse`] then derives the other two forms from them:
//! every visible long flag also reads the environment variable named by
//! [`env_name`], and every key of the config file becomes that flag's
//! *default*. clap's own precedence (command line, then environment, then
//! default) is then exactly the one above, and every value, wherever it came
//! from, goes through the flag's own value parser. A file value is checked with
//! that parser before anything starts, so that a bad one is reported with the
//! file and the key; an unknown key is an error too (a typo must not silently
//! leave a setting at its default).
//!
//! Hidden flags (test-only switches such as fault injection) are flags only:
//! they must never be turned on by a stray environment variable or file.
//!
//! # Caveats / not done yet
//! - The file is read once, at start; changing it needs a restart.
//! - File values must be scalars (string, integer, float, boolean) or, for list
//!   settings such as a router's `nodes`, arrays of them; tables are refused.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

/// The flag naming the TOML file (`--config FILE`); its environment variable is
/// `RINGKV_CONFIG`.
pub const CONFIG_FLAG: &str = "config";

/// `--help`'s closing words on where settings come from.
pub const HELP: &str = "\
Every setting can also be given as an environment variable (shown as [env: ...]) or as
a key of the --config TOML file named like the flag without `--`. Precedence: flag,
then environment, then file, then the default. --print-config shows the result.";

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "RINGKV_";

/// The environment variable of the flag `--long-name`: `RINGKV_LONG_NAME`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// One setting as it will be used: for `--print-config` and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The flag's long name (= the file key).
    pub name: String,
    /// The values as given (several for a list setting; none for an unset
    /// optional one).
    pub values: Vec<String>,
    pub source: Source,
}

/// The parsed settings, and where each came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub settings: T,
    pub effective: Vec<Effective>,
}

/// Parses `argv` (program name first) into `T`, reading the environment and the
/// config file named by `--config` or `RINGKV_CONFIG` as described in the
/// crate docs. Errors are clap errors (`.exit()` prints them and exits 2; help
/// and version exit 0).
pub fn parse<T, I, A>(argv: I) -> Result<Loaded<T>, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut command = with_env(T::command());
    let config_path = config_path(&argv);
    let mut from_file = Vec::new();
    if let Some(path) = &config_path {
        let table = read_file(&mut command, path)?;
        command = apply_file(command, path, &table, &mut from_file)?;
    }
    let matches = command.clone().try_get_matches_from(&argv)?;
    let effective = effective(&T::command(), &matches, &from_file);
    let settings = T::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    Ok(Loaded { settings, effective })
}

/// [`parse`] for a program's `main`: an error (or `--help`, `--version`) is
/// printed, and the exit code to return comes back instead of the settings.
pub fn parse_or_report<T, I, A>(argv: I) -> Result<Loaded<T>, std::process::ExitCode>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    parse(argv).map_err(|err| {
        let _ = err.print();
        std::process::ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
    })
}

/// Renders the effective settings as a TOML file that [`parse`] accepts, each
/// line commented with its source; settings whose name ends in one of
/// `secret_suffixes` print as `<redacted>`.
pub fn render(effective: &[Effective], secret_suffixes: &[&str]) -> String {
    let mut out = String::new();
    for setting in effective {
        let source = match setting.source {
            Source::Flag => "flag".to_string(),
            Source::Env => format!("environment {}", env_name(&setting.name)),
            Source::File => "config file".to_string(),
            Source::Default => "default".to_string(),
        };
        if setting.values.is_empty() {
            let _ = writeln!(out, "# {} (not set)", setting.name);
            continue;
        }
        let secret = secret_suffixes.iter().any(|s| setting.name.ends_with(s));
        let value = if secret {
            "\"<redacted>\"".to_string()
        } else if setting.values.len() == 1 {
            toml_scalar(&setting.values[0])
        } else {
            let items: Vec<String> = setting.values.iter().map(|v| toml_scalar(v)).collect();
            format!("[{}]", items.join(", "))
        };
        let _ = writeln!(out, "{} = {value}  # {source}", setting.name);
    }
    out
}

fn toml_scalar(value: &str) -> String {
    let plain = value.parse::<i64>().is_ok()
        || (value.parse::<f64>().is_ok_and(f64::is_finite) && value.contains('.'))
        || value == "true"
        || value == "false";
    if plain { value.to_string() } else { quoted(value) }
}

/// A TOML basic string.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The flag that prints the effective settings: an action, not a setting.
pub const PRINT_CONFIG_FLAG: &str = "print-config";

/// Flags that are actions, not settings: no environment variable, no file key.
const ACTIONS: [&str; 3] = ["help", "version", PRINT_CONFIG_FLAG];

/// Whether `arg` is a setting (visible, long-named, not an action, not
/// `--config` itself).
fn is_setting(arg: &Arg) -> bool {
    let Some(long) = arg.get_long() else { return false };
    !arg.is_hide_set() && !ACTIONS.contains(&long) && long != CONFIG_FLAG
}

/// Gives every setting its environment variable, and `--config` its own.
fn with_env(command: Command) -> Command {
    command.mut_args(|arg| match arg.get_long().map(str::to_string) {
        Some(long) if is_setting(&arg) || long == CONFIG_FLAG => arg.env(env_name(&long)),
        _ => arg,
    })
}

/// The config file named by the last `--config` flag, else by `RINGKV_CONFIG`.
/// Read before clap parses, because the file supplies defaults to that parse.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let prefix = format!("--{CONFIG_FLAG}=");
    let mut found = None;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if *arg == *flag {
            found = args.next().map(PathBuf::from);
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix(&prefix)) {
            found = Some(PathBuf::from(path));
        }
    }
    found.or_else(|| std::env::var_os(env_name(CONFIG_FLAG)).filter(|p| !p.is_empty()).map(PathBuf::from))
}

fn read_file(command: &mut Command, path: &Path) -> Result<toml::Table, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        command.error(clap::error::ErrorKind::Io, format!("cannot read config file {}: {e}", path.display()))
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        command.error(
            clap::error::ErrorKind::InvalidValue,
            format!("config file {} is not valid TOML: {e}", path.display()),
        )
    })
}

/// Makes each key of the file the default of its flag, after checking it with
/// the flag's value parser.
fn apply_file(
    mut command: Command,
    path: &Path,
    table: &toml::Table,
    from_file: &mut Vec<String>,
) -> Result<Command, clap::Error> {
    for (key, value) in table {
        let file_error = |command: &mut Command, what: String| {
            command.error(
                clap::error::ErrorKind::InvalidValue,
                format!("config file {}: setting `{key}`: {what}", path.display()),
            )
        };
        let Some(arg) = command.get_arguments().find(|a| is_setting(a) && a.get_long() == Some(key.as_str()))
        else {
            return Err(file_error(
                &mut command,
                "unknown setting (the settings are the flags of --help)".into(),
            ));
        };
        let arg = arg.clone();
        let list = matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some();
        let values = match value {
            toml::Value::Array(items) if list => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match scalar(item) {
                        Some(text) => values.push(text),
                        None => {
                            return Err(file_error(
                                &mut command,
                                format!("an array of {} is not a list of plain values", item.type_str()),
                            ));
                        }
                    }
                }
                values
            }
            other => match scalar(other) {
                Some(text) => vec![text],
                None => {
                    let what = if list { "a value or an array of values" } else { "a single value" };
                    return Err(file_error(&mut command, format!("a {} is not {what}", other.type_str())));
                }
            },
        };
        for text in &values {
            if let Err(reason) = check(&arg, text) {
                return Err(file_error(&mut command, reason));
            }
        }
        from_file.push(arg.get_id().to_string());
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |arg| arg.required(false).default_values(values.clone()));
    }
    Ok(command)
}

/// Runs `text` through `arg`'s own value parser (and range checks), as if it
/// had been given as the flag, in a command holding only that flag.
fn check(arg: &Arg, text: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match text {
            "true" | "false" => Ok(()),
            other => Err(format!("{other:?} is not true or false")),
        };
    }
    let long = arg.get_long().expect("settings have long names");
    let probe = Command::new("check").no_binary_name(true).arg(arg.clone().required(false).env(None::<&str>));
    match probe.try_get_matches_from([format!("--{long}"), text.to_string()]) {
        Ok(_) => Ok(()),
        Err(err) => {
            let reason = err.to_string();
            let reason = reason.lines().next().unwrap_or_default().trim_start_matches("error: ");
            Err(reason.to_string())
        }
    }
}

/// A TOML scalar as the text a flag would be given.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Each setting's value and source, in the order `command` (the settings as
/// declared) lists them.
fn effective(command: &Command, matches: &ArgMatches, from_file: &[String]) -> Vec<Effective> {
    command
        .get_arguments()
        .filter(|arg| is_setting(arg))
        .map(|arg| {
            let id = arg.get_id().as_str();
            let values: Vec<String> = matches
                .get_raw(id)
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ if from_file.iter().any(|f| f == id) => Source::File,
                _ => Source::Default,
            };
            Effective { name: arg.get_long().unwrap_or(id).to_string(), values, source }
        })
        .collect()
}

#[cfg(test)]
mod tests;
