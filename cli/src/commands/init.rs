//! `backazon init`: a new repository.

use anyhow::Result;
use backazon_engine::{Error, Repository, DEFAULT_PACK_SIZE};

use crate::ctx::Ctx;

pub fn run(ctx: &Ctx) -> Result<u8> {
    let backend = ctx.backend()?;
    if backend.exists(backazon_engine::Kind::Config, "config")? {
        return Err(Error::RepositoryExists(backend.location()).into());
    }
    let pw = ctx.passwords().get_new()?;
    let repo = Repository::init(backend.clone(), pw.as_bytes(), DEFAULT_PACK_SIZE)?;
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({"id": repo.config().id, "location": backend.location(), "version": repo.config().version})
        );
    }
    ctx.say(format!(
        "created backazon repository {} at {}\n\nKeep the password safe: without it the data cannot be recovered.",
        repo.config().id.short(),
        backend.location()
    ));
    Ok(0)
}
