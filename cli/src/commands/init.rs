//! `backazon init`: a new repository.

use anyhow::{bail, Result};
use backazon_engine::{Error, Repository, DEFAULT_PACK_SIZE};
use clap::Args;

use crate::ctx::Ctx;

#[derive(Args)]
pub struct InitArgs {
    /// Size of the pack objects data is stored in (16-64 MiB suit S3: fewer, larger
    /// objects; fixed for the repository's life)
    #[arg(long, value_parser = crate::format::parse_size)]
    pub pack_size: Option<u64>,
}

pub fn run(ctx: &Ctx, args: &InitArgs) -> Result<u8> {
    let pack_size = args.pack_size.unwrap_or(DEFAULT_PACK_SIZE as u64);
    if !backazon_engine::PACK_SIZES.contains(&(pack_size as usize)) {
        bail!("--pack-size must be between 1 MiB and 512 MiB (16-64 MiB suit most repositories)");
    }
    let backend = ctx.backend()?;
    if backend.exists(backazon_engine::Kind::Config, "config")? {
        return Err(Error::RepositoryExists(backend.location()).into());
    }
    let pw = ctx.passwords().get_new()?;
    let repo = Repository::init(backend.clone(), pw.as_bytes(), pack_size as usize)?;
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
