//! One file per command, as rustic_core's `commands/`: each parses nothing (clap's
//! structs live beside it) and calls the engine; `ctx.rs` holds what they share.

pub mod backup;
pub mod check;
pub mod daemon;
pub mod forget;
pub mod init;
pub mod job;
pub mod key;
pub mod ls;
pub mod mount;
pub mod prune;
pub mod replica;
pub mod restore;
pub mod service;
pub mod snapshots;
pub mod status;

/// Splits `SNAPSHOT[:PATH]`.
pub fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once(':') {
        Some((s, p)) => (s, p),
        None => (spec, ""),
    }
}
