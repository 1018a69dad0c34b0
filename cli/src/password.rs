//! Where a password comes from: a command, a file, the environment, or the terminal.
//! Never a plain command-line flag (it would show in `ps` and shell history).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

/// A password, wiped from memory when dropped.
pub type Password = Zeroizing<String>;

/// Environment variables that hold passwords: removed from every process Backazon
/// starts (a password command, the daemon's job runs), which need none of them.
pub const SECRET_VARS: &[&str] = &["BACKAZON_PASSWORD", "BACKAZON_NEW_PASSWORD"];

/// Removes [`SECRET_VARS`] from a child's environment.
pub fn scrub(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for v in SECRET_VARS {
        cmd.env_remove(v);
    }
    cmd
}

#[derive(Clone, Debug, Default)]
pub struct PasswordSource {
    pub file: Option<PathBuf>,
    pub command: Option<String>,
}

fn trim_newline(mut s: Password) -> Password {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

fn prompt(text: &str) -> Result<Password> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .context("reading the password from the terminal")
}

impl PasswordSource {
    /// The password for an existing repository.
    pub fn get(&self) -> Result<Password> {
        self.get_inner(false)
    }

    /// A password for a new repository or key: asked twice on a terminal.
    pub fn get_new(&self) -> Result<Password> {
        self.get_inner(true)
    }

    /// Asks twice on the terminal, ignoring the environment (for a new password).
    pub fn get_new_prompt_only(&self) -> Result<Password> {
        let a = prompt("enter the new password: ")?;
        let b = prompt("enter the new password again: ")?;
        if a != b {
            bail!("the passwords do not match");
        }
        non_empty(a)
    }

    fn get_inner(&self, confirm: bool) -> Result<Password> {
        if let Some(cmd) = &self.command {
            // Its output is read here and never shown; its errors go to stderr.
            let out = scrub(&mut crate::sys::shell_command(cmd))
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running the password command {cmd:?}"))?;
            let stdout = Zeroizing::new(out.stdout);
            if !out.status.success() {
                bail!("the password command {cmd:?} failed ({})", out.status);
            }
            let text = String::from_utf8(stdout.to_vec())
                .map_err(|_| anyhow!("the password command printed something that is not UTF-8"))?;
            return non_empty(trim_newline(Zeroizing::new(text)));
        }
        if let Some(f) = &self.file {
            let s = Zeroizing::new(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the password file {}", f.display()))?,
            );
            let first = s.lines().next().unwrap_or("").to_string();
            return non_empty(Zeroizing::new(first));
        }
        if let Ok(pw) = std::env::var("BACKAZON_PASSWORD") {
            return non_empty(Zeroizing::new(pw));
        }
        if !std::io::stdin().is_terminal() {
            bail!("no password given: set BACKAZON_PASSWORD, or use --password-file or --password-command");
        }
        if confirm {
            let a = prompt("enter password for the repository: ")?;
            let b = prompt("enter the password again: ")?;
            if a != b {
                bail!("the passwords do not match");
            }
            non_empty(a)
        } else {
            non_empty(prompt("enter password for the repository: ")?)
        }
    }
}

fn non_empty(pw: Password) -> Result<Password> {
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}
