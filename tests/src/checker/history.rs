//! The history a chaos workload records: one [`Op`] per client request, with the
//! real-time interval in which it was outstanding and what the client learned.
//!
//! The workload runner produces these; the checkers only read them. The meaning of
//! each field is the contract between the two, so it is spelled out here:
//!
//! - **Time.** `invoke_us` is taken before the request is sent and `complete_us`
//!   after the answer (or the error) arrived, both from one monotonic clock of the
//!   runner process, in microseconds since an arbitrary origin. An op's effect, if
//!   any, took place at one instant inside `[invoke_us, complete_us]` — except for
//!   [`Outcome::Unknown`], whose effect may land at any time after `invoke_us`, even
//!   after `complete_us` (a proposal in flight in a partitioned leader's log can be
//!   committed by its successor much later). Equal timestamps count as concurrent.
//! - **Values.** Every `Put` of the workload writes a value no other op writes, so a
//!   read names the write it observed. Counters are written by `Increment` only, as
//!   the decimal integer of the new value (absent = 0).
//! - **Versions.** A [`Version`] is the shard's Raft log index of the write that last
//!   changed the key. All ops of one Raft entry (a proposal batch) share its index,
//!   so versions *increase* across writes to one key, and two writes to one key share
//!   a version only if they were in the same batch — which requires them to have
//!   been outstanding at the same time. `0` means absent.
//! - **Outcomes.** [`Outcome::Ok`] carries the response; a failed condition is an
//!   `Ok` (`succeeded = false`, with the key's current version, 0 if absent), not a
//!   failure. [`Outcome::Failed`] means the request *surely* did not change anything
//!   (rejected before proposal, `NotLeader`, a non-integer counter, ...), and
//!   [`Outcome::Unknown`] means it may or may not have taken effect (timeout,
//!   connection lost after sending, `UNAVAILABLE` from a leader that may have
//!   proposed it). When in doubt the runner must say `Unknown`: calling a maybe-applied
//!   write `Failed` makes the checkers report anomalies that are not there.

use std::collections::BTreeMap;
use std::fmt;

pub use ringkv_core::Version;

/// One client request and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The workload client (logical process) that issued it. Only for reports: the
    /// checkers rely on the time intervals, not on per-client order.
    pub client: u32,
    pub key: String,
    /// Before the request was sent (µs, the runner's monotonic clock).
    pub invoke_us: u64,
    /// After the response or error arrived (µs). Meaningless for the effect of an
    /// `Unknown` op, which may land later.
    pub complete_us: u64,
    pub call: Call,
    pub outcome: Outcome,
}

/// The condition of a `Put` (the `oneof condition` of `PutRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    None,
    /// Succeeds only if the key is absent.
    IfAbsent,
    /// Succeeds only if the key exists at exactly this version (never for 0).
    IfVersion(Version),
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A linearizable read.
    Get,
    /// `ttl_ms = 0`: no expiry. Keys with TTL puts are left to the TTL check.
    Put {
        value: String,
        condition: Condition,
        ttl_ms: u64,
    },
    Delete {
        if_version: Option<Version>,
    },
    /// Without a TTL (the workload does not combine counters and TTLs).
    Increment {
        delta: i64,
    },
}

/// The response of a successful request; its variant must match the [`Call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Return {
    /// `value` is empty and `version` 0 when not found.
    Get {
        found: bool,
        value: String,
        version: Version,
    },
    /// The new version on success; the current version (0 = absent) on failure.
    Put {
        succeeded: bool,
        version: Version,
    },
    /// The deleting write's version when deleted; else the current version.
    Delete {
        deleted: bool,
        version: Version,
    },
    Increment {
        value: i64,
        version: Version,
    },
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(Return),
    /// Surely not applied.
    Failed,
    /// May or may not have been applied, at any time after `invoke_us`.
    Unknown,
}

impl Op {
    /// Whether the call may change the key (whatever the outcome).
    pub fn is_write(&self) -> bool {
        !matches!(self.call, Call::Get)
    }

    /// Whether the op may have changed something: a write that is not `Failed`.
    pub fn may_have_written(&self) -> bool {
        self.is_write() && self.outcome != Outcome::Failed
    }

    /// The version of an acknowledged write that changed the key (a successful
    /// `Put`, a `Delete` that deleted, an `Increment`).
    pub fn acked_write_version(&self) -> Option<Version> {
        match &self.outcome {
            Outcome::Ok(Return::Put { succeeded: true, version })
            | Outcome::Ok(Return::Delete { deleted: true, version })
            | Outcome::Ok(Return::Increment { version, .. }) => Some(*version),
            _ => None,
        }
    }

    /// The TTL of a `Put` (0 for everything else).
    pub fn ttl_ms(&self) -> u64 {
        match &self.call {
            Call::Put { ttl_ms, .. } => *ttl_ms,
            _ => 0,
        }
    }

    /// The response of a successful `Get` that found the key: (value, version).
    pub fn read_found(&self) -> Option<(&str, Version)> {
        match &self.outcome {
            Outcome::Ok(Return::Get { found: true, value, version }) => Some((value, *version)),
            _ => None,
        }
    }

    /// Checks the op is well-formed: the return matches the call, time does not run
    /// backwards, and a version reported for a live key or a successful write is not 0.
    /// A malformed op is a bug in the workload runner, not in ringkv.
    pub fn validate(&self) -> Result<(), String> {
        if self.complete_us < self.invoke_us {
            return Err(format!(
                "completes ({}) before it is invoked ({})",
                self.complete_us, self.invoke_us
            ));
        }
        let Outcome::Ok(ret) = &self.outcome else { return Ok(()) };
        let version_ok = match (&self.call, ret) {
            (Call::Get, Return::Get { found, version, .. }) => !found || *version > 0,
            (Call::Put { .. }, Return::Put { succeeded, version }) => !succeeded || *version > 0,
            (Call::Delete { .. }, Return::Delete { deleted, version }) => !deleted || *version > 0,
            (Call::Increment { .. }, Return::Increment { version, .. }) => *version > 0,
            _ => return Err("the return does not match the call".into()),
        };
        if !version_ok {
            return Err("a found key or a successful write reports version 0".into());
        }
        Ok(())
    }
}

/// Groups a history by key, each key's ops in the history's order.
pub fn by_key(history: &[Op]) -> BTreeMap<String, Vec<Op>> {
    let mut keys: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in history {
        keys.entry(op.key.clone()).or_default().push(op.clone());
    }
    keys
}

/// Formats µs as seconds with µs precision.
pub(crate) struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get => write!(f, "get"),
            Call::Put { value, condition, ttl_ms } => {
                write!(f, "put {value:?}")?;
                match condition {
                    Condition::None => {}
                    Condition::IfAbsent => write!(f, " if_absent")?,
                    Condition::IfVersion(v) => write!(f, " if_version={v}")?,
                }
                if *ttl_ms > 0 {
                    write!(f, " ttl={ttl_ms}ms")?;
                }
                Ok(())
            }
            Call::Delete { if_version: None } => write!(f, "delete"),
            Call::Delete { if_version: Some(v) } => write!(f, "delete if_version={v}"),
            Call::Increment { delta } => write!(f, "increment {delta:+}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed => write!(f, "failed"),
            Outcome::Unknown => write!(f, "unknown"),
            Outcome::Ok(Return::Get { found: false, .. }) => write!(f, "not found"),
            Outcome::Ok(Return::Get { found: true, value, version }) => write!(f, "{value:?} @v{version}"),
            Outcome::Ok(Return::Put { succeeded: true, version })
            | Outcome::Ok(Return::Delete { deleted: true, version }) => write!(f, "ok @v{version}"),
            Outcome::Ok(Return::Put { succeeded: false, version })
            | Outcome::Ok(Return::Delete { deleted: false, version }) => {
                write!(f, "not applied, current @v{version}")
            }
            Outcome::Ok(Return::Increment { value, version }) => write!(f, "{value} @v{version}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} .. {}] c{} {:?} {} -> {}",
            Micros(self.invoke_us),
            Micros(self.complete_us),
            self.client,
            self.key,
            self.call,
            self.outcome
        )
    }
}

/// Terse constructors for hand-written histories in tests.
/// Builders of hand-made histories, for the checkers' tests and the generated
/// histories of the self-test and its benchmark.
pub(crate) mod build {
    use super::*;

    pub fn op(client: u32, key: &str, invoke_us: u64, complete_us: u64, call: Call, outcome: Outcome) -> Op {
        Op { client, key: key.into(), invoke_us, complete_us, call, outcome }
    }

    pub fn put(value: &str) -> Call {
        Call::Put { value: value.into(), condition: Condition::None, ttl_ms: 0 }
    }

    pub fn put_if_absent(value: &str) -> Call {
        Call::Put { value: value.into(), condition: Condition::IfAbsent, ttl_ms: 0 }
    }

    pub fn cas(value: &str, version: Version) -> Call {
        Call::Put { value: value.into(), condition: Condition::IfVersion(version), ttl_ms: 0 }
    }

    #[cfg(test)]
    pub fn put_ttl(value: &str, ttl_ms: u64) -> Call {
        Call::Put { value: value.into(), condition: Condition::None, ttl_ms }
    }

    #[cfg(test)]
    pub fn del() -> Call {
        Call::Delete { if_version: None }
    }

    pub fn incr(delta: i64) -> Call {
        Call::Increment { delta }
    }

    pub fn wrote(version: Version) -> Outcome {
        Outcome::Ok(Return::Put { succeeded: true, version })
    }

    pub fn refused(current: Version) -> Outcome {
        Outcome::Ok(Return::Put { succeeded: false, version: current })
    }

    pub fn deleted(version: Version) -> Outcome {
        Outcome::Ok(Return::Delete { deleted: true, version })
    }

    pub fn not_deleted(current: Version) -> Outcome {
        Outcome::Ok(Return::Delete { deleted: false, version: current })
    }

    pub fn counted(value: i64, version: Version) -> Outcome {
        Outcome::Ok(Return::Increment { value, version })
    }

    pub fn read(value: &str, version: Version) -> Outcome {
        Outcome::Ok(Return::Get { found: true, value: value.into(), version })
    }

    pub fn absent() -> Outcome {
        Outcome::Ok(Return::Get { found: false, value: String::new(), version: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn validate_catches_runner_bugs() {
        assert!(op(1, "k", 5, 10, put("a"), wrote(3)).validate().is_ok());
        assert!(op(1, "k", 5, 10, Call::Get, Outcome::Unknown).validate().is_ok());
        assert!(op(1, "k", 10, 5, put("a"), wrote(3)).validate().is_err(), "time runs backwards");
        assert!(op(1, "k", 5, 10, Call::Get, wrote(3)).validate().is_err(), "return of another call");
        assert!(op(1, "k", 5, 10, put("a"), wrote(0)).validate().is_err(), "successful write at version 0");
        assert!(op(1, "k", 5, 10, Call::Get, read("a", 0)).validate().is_err(), "found at version 0");
    }

    #[test]
    fn display_is_one_readable_line() {
        let o = op(3, "k", 1_500_000, 1_502_250, cas("v9", 4), refused(7));
        assert_eq!(
            o.to_string(),
            r#"[1.500000s .. 1.502250s] c3 "k" put "v9" if_version=4 -> not applied, current @v7"#
        );
    }
}
