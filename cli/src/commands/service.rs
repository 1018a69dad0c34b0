//! `backazon service install | uninstall`: runs `backazon daemon` in the background from
//! login on: a systemd user unit on Linux, a launchd agent on macOS, a scheduled task at
//! logon on Windows. The files are written by plain functions (tested everywhere); only
//! the enabling commands differ per platform.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::Ctx;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Write the service definition and start it
    Install {
        /// Write the definition only; do not enable or start it
        #[arg(long)]
        no_start: bool,
    },
    /// Stop the service and remove its definition
    Uninstall,
}

/// The daemon's command line, quoted for the platform's service file.
fn daemon_args(ctx: &Ctx) -> Result<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().context("finding the backazon executable")?;
    let mut args = Vec::new();
    if let Some(c) = &ctx.global.config {
        args.push("--config".into());
        args.push(absolute(c).display().to_string());
    }
    if let Some(s) = &ctx.global.state_dir {
        args.push("--state-dir".into());
        args.push(absolute(s).display().to_string());
    }
    args.push("daemon".into());
    Ok((exe, args))
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// systemd quoting: every argument double-quoted, `\` and `"` escaped, `%` doubled,
/// `$` doubled (no variable expansion).
fn systemd_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn systemd_unit(exe: &Path, args: &[String]) -> String {
    let cmd: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| systemd_quote(&a))
        .collect();
    format!(
        "[Unit]
Description=Backazon backup daemon (runs backup jobs when they are due)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={}
Restart=on-failure
RestartSec=30
# Backups yield to interactive work.
Nice=10
IOSchedulingClass=idle
# SIGTERM stops running jobs; the repository keeps what they stored.
KillMode=mixed
TimeoutStopSec=60

[Install]
WantedBy=default.target
",
        cmd.join(" ")
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn launchd_plist(exe: &Path, args: &[String], log: &Path) -> String {
    let items: String = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("    <string>{}</string>\n", xml_escape(&a)))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>org.backazon.daemon</string>
  <key>ProgramArguments</key>
  <array>
{items}  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict><key>SuccessfulExit</key><false/></dict>
  <key>ProcessType</key>
  <string>Background</string>
  <key>StandardErrorPath</key>
  <string>{}</string>
</dict>
</plist>
"#,
        xml_escape(&log.display().to_string())
    )
}

/// The `schtasks /TR` command line of the Windows task.
pub fn windows_task_command(exe: &Path, args: &[String]) -> String {
    std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("\"{}\"", a.replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the service definition goes.
fn definition_path() -> PathBuf {
    if cfg!(target_os = "macos") {
        crate::sys::home().join("Library/LaunchAgents/org.backazon.daemon.plist")
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| crate::sys::home().join(".config"))
            .join("systemd/user/backazon.service")
    }
}

fn try_run(ctx: &Ctx, program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            ctx.say(format!("`{program} {}` failed ({s})", args.join(" ")));
            false
        }
        Err(e) => {
            ctx.say(format!("could not run {program}: {e}"));
            false
        }
    }
}

pub fn run(ctx: &Ctx, command: ServiceCommand) -> Result<u8> {
    let (exe, args) = daemon_args(ctx)?;
    if cfg!(windows) {
        let task = windows_task_command(&exe, &args);
        return match command {
            ServiceCommand::Install { no_start } => {
                ctx.say(format!("scheduled task Backazon runs at logon: {task}"));
                if !no_start
                    && try_run(
                        ctx,
                        "schtasks",
                        &[
                            "/Create", "/F", "/SC", "ONLOGON", "/TN", "Backazon", "/TR", &task,
                        ],
                    )
                {
                    try_run(ctx, "schtasks", &["/Run", "/TN", "Backazon"]);
                }
                Ok(0)
            }
            ServiceCommand::Uninstall => {
                try_run(ctx, "schtasks", &["/End", "/TN", "Backazon"]);
                try_run(ctx, "schtasks", &["/Delete", "/F", "/TN", "Backazon"]);
                Ok(0)
            }
        };
    }
    let path = definition_path();
    let macos = cfg!(target_os = "macos");
    match command {
        ServiceCommand::Install { no_start } => {
            let text = if macos {
                let log = super::job::state_dir(ctx).log_path();
                launchd_plist(&exe, &args, &log)
            } else {
                systemd_unit(&exe, &args)
            };
            crate::jobs::write_atomic(&path, text.as_bytes())?;
            ctx.say(format!("wrote {}", path.display()));
            if no_start {
                return Ok(0);
            }
            let started = if macos {
                try_run(
                    ctx,
                    "launchctl",
                    &["load", "-w", &path.display().to_string()],
                )
            } else {
                try_run(ctx, "systemctl", &["--user", "daemon-reload"])
                    && try_run(
                        ctx,
                        "systemctl",
                        &["--user", "enable", "--now", "backazon.service"],
                    )
            };
            if started {
                ctx.say("the daemon is running; `backazon status` shows the jobs");
                if !macos {
                    ctx.say(
                        "to keep it running while you are logged out: loginctl enable-linger $USER",
                    );
                }
            } else {
                ctx.say(if macos {
                    format!("start it with: launchctl load -w {}", path.display())
                } else {
                    "start it with: systemctl --user daemon-reload && systemctl --user enable --now backazon.service".into()
                });
            }
            Ok(0)
        }
        ServiceCommand::Uninstall => {
            if macos {
                try_run(
                    ctx,
                    "launchctl",
                    &["unload", "-w", &path.display().to_string()],
                );
            } else {
                try_run(
                    ctx,
                    "systemctl",
                    &["--user", "disable", "--now", "backazon.service"],
                );
            }
            match std::fs::remove_file(&path) {
                Ok(()) => ctx.say(format!("removed {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ctx.say(format!("{} was not there", path.display()))
                }
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_quotes_its_command() {
        let u = systemd_unit(
            Path::new("/opt/back azon/backazon"),
            &[
                "--config".into(),
                "/home/a/100%/jobs.toml".into(),
                "daemon".into(),
            ],
        );
        assert!(u.contains(
            "ExecStart=\"/opt/back azon/backazon\" \"--config\" \"/home/a/100%%/jobs.toml\" \"daemon\""
        ));
        assert!(u.contains("WantedBy=default.target"));
        let p = launchd_plist(Path::new("/b"), &["daemon".into()], Path::new("/l&g"));
        assert!(p.contains("<string>/b</string>") && p.contains("/l&amp;g"));
        assert_eq!(
            windows_task_command(Path::new("C:\\b.exe"), &["daemon".into()]),
            "\"C:\\b.exe\" \"daemon\""
        );
    }
}
