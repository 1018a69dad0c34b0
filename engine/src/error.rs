//! The engine's error type: every variant says what failed and where, so a user can act on it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wrong password or no key file matches")]
    WrongPassword,

    #[error("no repository at {0} (run `backazon init` first)")]
    NoRepository(String),

    #[error("a repository already exists at {0}")]
    RepositoryExists(String),

    #[error("repository format version {found} is newer than this program understands (up to {supported}); upgrade backazon")]
    NewerFormat { found: u32, supported: u32 },

    #[error("{what}: {why}")]
    Corrupt { what: String, why: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Backend(String),

    /// The storage did not answer (no connection, timeouts, server errors after every
    /// retry): worth trying again later, unlike a refusal.
    #[error("{0}")]
    Unreachable(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    Invalid(String),

    /// Another process holds a lock this operation cannot share.
    #[error("{0}")]
    Locked(String),
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }
}
