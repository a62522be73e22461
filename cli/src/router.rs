//! The router behind `ringkv router`: the `ringkv-router` command line, run from
//! the multi-call `ringkv` binary so that `ringkv dev` needs no other executable.

pub use ringkv_router::cli;

/// Whether `ringkv router` runs a router (`ringkv dev` then starts one and hands
/// out its address as the endpoint).
pub const AVAILABLE: bool = true;
