//! `backazon key add|list|remove|passwd`: the passwords (key files) that open a repository.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::ctx::Ctx;
use crate::format::local_time;
use crate::password::PasswordSource;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Add a password
    Add(NewPassword),
    /// List key files
    List,
    /// Remove a key file (not the one in use)
    Remove { id: String },
    /// Change the password in use
    Passwd(NewPassword),
}

#[derive(Args)]
pub struct NewPassword {
    /// Read the new password from this file
    #[arg(long, env = "BACKAZON_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
}

fn new_password(ctx: &Ctx, np: &NewPassword) -> Result<crate::password::Password> {
    if let Some(f) = &np.new_password_file {
        PasswordSource {
            file: Some(f.clone()),
            command: None,
        }
        .get()
    } else if let Ok(pw) = std::env::var("BACKAZON_NEW_PASSWORD") {
        Ok(zeroize::Zeroizing::new(pw))
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no new password given: use --new-password-file or set BACKAZON_NEW_PASSWORD");
        }
        let _ = ctx;
        PasswordSource::default().get_new_prompt_only()
    }
}

pub fn run(ctx: &Ctx, command: KeyCommand) -> Result<u8> {
    let mut repo = ctx.open()?;
    match command {
        KeyCommand::Add(np) => {
            let pw = new_password(ctx, &np)?;
            let name = repo.add_key(pw.as_bytes())?;
            ctx.say(format!("added key {}", &name[..8]));
        }
        KeyCommand::List => {
            let keys = repo.keys_list()?;
            if ctx.global.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(n, k)| {
                        serde_json::json!({"id": n, "current": n == repo.key_name(), "created": k.created,
                        "hostname": k.hostname, "username": k.username, "kdf": k.kdf, "rounds": k.rounds})
                    })
                    .collect();
                out!("{}", serde_json::to_string_pretty(&list)?);
            } else if !ctx.global.quiet {
                out!(" {:<8}  {:<19}  {:<16}  User", "ID", "Created", "Host");
                for (n, k) in &keys {
                    let mark = if n == repo.key_name() { "*" } else { " " };
                    let created = k
                        .created
                        .parse()
                        .map(local_time)
                        .unwrap_or_else(|_| k.created.clone());
                    out!(
                        "{mark}{:<8}  {:<19}  {:<16}  {}",
                        &n[..8],
                        created,
                        k.hostname,
                        k.username
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.keys_list()?;
            let matches: Vec<_> = keys.iter().filter(|(n, _)| n.starts_with(&id)).collect();
            match matches.as_slice() {
                [(name, _)] => {
                    repo.remove_key(name)?;
                    ctx.say(format!("removed key {}", &name[..8]));
                }
                [] => bail!("no key file matches {id:?}"),
                _ => bail!("{id:?} matches several key files; give more digits"),
            }
        }
        KeyCommand::Passwd(np) => {
            let pw = new_password(ctx, &np)?;
            let name = repo.change_password(pw.as_bytes())?;
            ctx.say(format!("password changed (key {})", &name[..8]));
        }
    }
    Ok(0)
}
