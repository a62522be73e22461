//! Wall-clock time as the state machine sees it: unix milliseconds, read only on
//! the leader (proposals, expiry scans) and by reads. Apply never reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::command::UnixMs;

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> UnixMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as UnixMs).unwrap_or(0)
}
