//! ringkv-node (being built).

pub mod command;
pub mod raft_types;
pub mod state_machine;
pub mod store;
