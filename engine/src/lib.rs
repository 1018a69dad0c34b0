//! Backazon's engine: the repository format (docs/FORMAT.md) and the operations on it.
//! It knows nothing of terminals, argument parsing or FUSE; front ends call the
//! operations below and read their progress counters.

pub mod backend;
pub mod backup;
pub mod blob;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod craft;
pub mod crypto;
pub mod datacache;
pub mod error;
pub mod fetch;
pub mod forget;
pub mod glob;
pub mod id;
pub mod index;
pub mod lock;
pub mod names;
pub mod pack;
pub mod paged;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod sys;
pub mod tree;

pub use backend::local::LocalBackend;
pub use backend::{Backend, Kind, Leftover};
pub use error::{Error, Result};
pub use id::Id;
pub use repo::{Repository, DEFAULT_PACK_SIZE, FORMAT_VERSION, PACK_SIZES};

/// Folders nested deeper than this are not followed by restore, check and ls (a warning
/// or an error names where): deeper than any path an OS takes (Linux's PATH_MAX of
/// 4,096 bytes holds at most 2,048 folders), and bounded so that a crafted snapshot of
/// endless nesting cannot exhaust a stack or memory.
pub const MAX_DEPTH: usize = 4096;
