//! `backazon service install | uninstall | status`: runs `backazon daemon` in the
//! background. Linux: a systemd user unit; macOS: a launchd agent; Windows: a service of
//! the Service Control Manager, started at boot as LocalSystem, so jobs run with nobody
//! logged on and can read every file the user chose (`sys::service` registers it).
//!
//! What is registered is built here by plain functions, tested on every OS and printed
//! as is by `--dry-run`; only the registering differs per platform.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::job::{absolute, state_dir};
use crate::Ctx;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Register the daemon as a service and start it
    Install {
        /// Register it but do not start it now
        #[arg(long)]
        no_start: bool,
        /// Print exactly what would be registered and run, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop the service and remove it
    Uninstall {
        /// Print what would be stopped and removed, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Whether the service is registered and running, and what it runs
    Status,
    /// Windows: the service's entry point, started by the Service Control Manager
    #[command(hide = true)]
    Run(RunArgs),
}

/// The folders of the user who installed the service: the service runs as LocalSystem,
/// whose own profile is elsewhere, so its jobs file, state, cache and `.aws` files are
/// found in this user's folders, as when the user runs `backazon daemon` in a console.
#[cfg_attr(not(windows), allow(dead_code))]
#[derive(Args, Clone, Default)]
pub struct RunArgs {
    /// %USERPROFILE% of the installing user
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// %APPDATA% of the installing user
    #[arg(long)]
    pub appdata: Option<PathBuf>,
    /// %LOCALAPPDATA% of the installing user
    #[arg(long)]
    pub local_appdata: Option<PathBuf>,
}

/// The Windows service `service install` registers.
#[cfg_attr(not(windows), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsService {
    pub exe: PathBuf,
    pub args: Vec<String>,
}

#[cfg_attr(not(windows), allow(dead_code))]
impl WindowsService {
    pub const NAME: &'static str = "Backazon";
    pub const DISPLAY_NAME: &'static str = "Backazon backup daemon";
    pub const DESCRIPTION: &'static str = "Runs Backazon's backup jobs when they are due, \
        and once at start for runs missed while the computer was off.";
    /// Restarts after a failure, and the window after which failures are forgotten.
    pub const RESTART_AFTER_SECS: u64 = 60;
    pub const RESTARTS: usize = 3;
    pub const FAILURE_RESET_SECS: u64 = 24 * 3600;

    /// The service for the jobs file and state folder given, run with the installing
    /// user's folders.
    pub fn new(
        exe: &Path,
        config: &Path,
        state: &Path,
        cache: Option<&Path>,
        user: &RunArgs,
    ) -> WindowsService {
        let mut args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        if let Some(c) = cache {
            args.push("--cache-dir".into());
            args.push(c.display().to_string());
        }
        args.push("service".into());
        args.push("run".into());
        for (flag, value) in [
            ("--profile", &user.profile),
            ("--appdata", &user.appdata),
            ("--local-appdata", &user.local_appdata),
        ] {
            if let Some(v) = value {
                args.push(flag.into());
                args.push(v.display().to_string());
            }
        }
        WindowsService {
            exe: exe.to_path_buf(),
            args,
        }
    }

    /// The command line as the Service Control Manager stores it (`binPath`), each
    /// argument quoted the way Windows programs split their command line.
    pub fn command_line(&self) -> String {
        std::iter::once(self.exe.display().to_string())
            .chain(self.args.iter().cloned())
            .map(|a| windows_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What `--dry-run` prints: everything that is registered.
    pub fn describe(&self, start: bool) -> String {
        let mut text = format!(
            "would register the Windows service {name}:
  display name:  {display}
  description:   {desc}
  command line:  {cmd}
  start:         automatic, delayed (at boot, before anyone logs on)
  account:       LocalSystem (reads every file the jobs name; shadow copies need it)
  on failure:    restart after {after} s, up to {n} times a day
  stop:          running jobs stop as on Ctrl-C; what they stored is kept
",
            name = Self::NAME,
            display = Self::DISPLAY_NAME,
            desc = Self::DESCRIPTION,
            cmd = self.command_line(),
            after = Self::RESTART_AFTER_SECS,
            n = Self::RESTARTS,
        );
        if start {
            text.push_str(&format!(
                "and start it now (it replaces an earlier {} service, stopping it first)\n",
                Self::NAME
            ));
        }
        text
    }
}

/// One argument quoted for a Windows command line (the rules of CommandLineToArgvW and
/// the C runtime): quoted when empty or holding a blank or `"`; inside quotes, a `"` is
/// escaped and the backslashes before it, or before the closing quote, are doubled.
#[cfg_attr(not(windows), allow(dead_code))]
pub fn windows_quote(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

/// The daemon's command line for systemd and launchd.
#[cfg(not(windows))]
fn unix_daemon_args(ctx: &Ctx) -> Result<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().context("finding the backazon executable")?;
    let mut args = Vec::new();
    if let Some(c) = &ctx.global.config {
        args.push("--config".into());
        args.push(absolute(c)?.display().to_string());
    }
    if let Some(s) = &ctx.global.state_dir {
        args.push("--state-dir".into());
        args.push(absolute(s)?.display().to_string());
    }
    args.push("daemon".into());
    Ok((exe, args))
}

/// systemd quoting: every argument double-quoted, `\` and `"` escaped, `%` doubled,
/// `$` doubled (no variable expansion).
#[cfg_attr(windows, allow(dead_code))]
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

#[cfg_attr(windows, allow(dead_code))]
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

#[cfg_attr(windows, allow(dead_code))]
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg_attr(windows, allow(dead_code))]
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

pub fn run(ctx: &Ctx, command: ServiceCommand) -> Result<u8> {
    #[cfg(windows)]
    return run_windows(ctx, command);
    #[cfg(not(windows))]
    run_unix(ctx, command)
}

#[cfg(not(windows))]
fn run_unix(ctx: &Ctx, command: ServiceCommand) -> Result<u8> {
    let macos = cfg!(target_os = "macos");
    let path = unix_definition_path();
    let (exe, args) = unix_daemon_args(ctx)?;
    let (start, stop): (Vec<Vec<String>>, Vec<Vec<String>>) = if macos {
        let p = path.display().to_string();
        (
            vec![vec![
                "launchctl".into(),
                "load".into(),
                "-w".into(),
                p.clone(),
            ]],
            vec![vec!["launchctl".into(), "unload".into(), "-w".into(), p]],
        )
    } else {
        let ctl = |a: &[&str]| {
            std::iter::once("systemctl")
                .chain(a.iter().copied())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        (
            vec![
                ctl(&["--user", "daemon-reload"]),
                ctl(&["--user", "enable", "--now", "backazon.service"]),
            ],
            vec![ctl(&["--user", "disable", "--now", "backazon.service"])],
        )
    };
    match command {
        ServiceCommand::Install { no_start, dry_run } => {
            let text = if macos {
                launchd_plist(&exe, &args, &state_dir(ctx).log_path())
            } else {
                systemd_unit(&exe, &args)
            };
            if dry_run {
                out!("would write {}:\n{text}", path.display());
                if !no_start {
                    for c in &start {
                        out!("would run: {}", c.join(" "));
                    }
                }
                return Ok(0);
            }
            crate::jobs::write_atomic(&path, text.as_bytes())?;
            ctx.say(format!("wrote {}", path.display()));
            if no_start {
                return Ok(0);
            }
            if start.iter().all(|c| try_run(ctx, c)) {
                ctx.say("the daemon is running; `backazon status` shows the jobs");
                if !macos {
                    ctx.say(
                        "to keep it running while you are logged out: loginctl enable-linger $USER",
                    );
                }
            } else {
                let cmds: Vec<String> = start.iter().map(|c| c.join(" ")).collect();
                ctx.say(format!("start it with: {}", cmds.join(" && ")));
            }
            Ok(0)
        }
        ServiceCommand::Uninstall { dry_run } => {
            if dry_run {
                for c in &stop {
                    out!("would run: {}", c.join(" "));
                }
                out!("would remove {}", path.display());
                return Ok(0);
            }
            for c in &stop {
                try_run(ctx, c);
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
        ServiceCommand::Status => {
            let installed = path.exists();
            let state = if macos || !installed {
                None
            } else {
                std::process::Command::new("systemctl")
                    .args(["--user", "is-active", "backazon.service"])
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            };
            print_status(
                ctx,
                &ServiceStatus {
                    what: path.display().to_string(),
                    installed,
                    state,
                    ..Default::default()
                },
            );
            Ok(0)
        }
        ServiceCommand::Run(_) => anyhow::bail!(
            "`service run` is what Windows' service manager starts; here run `backazon daemon`"
        ),
    }
}

/// What `service status` shows, on every platform.
#[derive(Default)]
pub struct ServiceStatus {
    /// The service's name or definition file.
    pub what: String,
    pub installed: bool,
    /// running, stopped, ... where the platform tells.
    pub state: Option<String>,
    pub command_line: Option<String>,
    pub start: Option<String>,
    pub account: Option<String>,
}

fn print_status(ctx: &Ctx, st: &ServiceStatus) {
    if ctx.global.json {
        out!(
            "{}",
            serde_json::json!({
                "service": st.what,
                "installed": st.installed,
                "state": st.state,
                "command_line": st.command_line,
                "start": st.start,
                "account": st.account,
            })
        );
        return;
    }
    let what = &st.what;
    match (st.installed, &st.state) {
        (false, _) => out!("{what}: not installed (`backazon service install` installs it)"),
        (true, Some(s)) => out!("{what}: {s}"),
        (true, None) => out!("{what}: installed"),
    }
    for (label, value) in [
        ("runs", &st.command_line),
        ("start", &st.start),
        ("account", &st.account),
    ] {
        if let Some(v) = value {
            out!("  {label}: {v}");
        }
    }
}

/// Windows: the service, with the folders this user's commands use.
#[cfg(windows)]
fn run_windows(ctx: &Ctx, command: ServiceCommand) -> Result<u8> {
    use crate::sys::service;
    match command {
        ServiceCommand::Run(user) => {
            let global = ctx.global.clone();
            service::run_as_service(&user, move |signals| {
                let ctx = Ctx::new(global);
                super::daemon::run_with(&ctx, &Default::default(), signals).unwrap_or_else(|e| {
                    // No console: the daemon's own log is where a user looks.
                    state_dir(&ctx).log(&format!("the service could not run the daemon: {e:#}"));
                    1
                })
            })
        }
        ServiceCommand::Install { no_start, dry_run } => {
            let exe = std::env::current_exe().context("finding the backazon executable")?;
            let config = absolute(&super::job::config_path(ctx))?;
            let state = absolute(&state_dir(ctx).0)?;
            let cache = ctx.global.cache_dir.as_deref().map(absolute).transpose()?;
            let user = RunArgs {
                profile: std::env::var_os("USERPROFILE").map(PathBuf::from),
                appdata: std::env::var_os("APPDATA").map(PathBuf::from),
                local_appdata: std::env::var_os("LOCALAPPDATA").map(PathBuf::from),
            };
            let svc = WindowsService::new(&exe, &config, &state, cache.as_deref(), &user);
            if dry_run {
                out!("{}", svc.describe(!no_start).trim_end());
                return Ok(0);
            }
            if !config.exists() {
                ctx.say(format!(
                    "note: {} does not exist yet; the service reads it when it appears (`backazon job add`)",
                    config.display()
                ));
            }
            service::install(&svc, !no_start, &|m| ctx.say(m))?;
            ctx.say(format!(
                "registered the Windows service {} ({}){}; `backazon status` shows the jobs, {} the log",
                WindowsService::NAME,
                svc.command_line(),
                if no_start { "" } else { " and started it" },
                state.join("backazon.log").display()
            ));
            Ok(0)
        }
        ServiceCommand::Uninstall { dry_run } => {
            if dry_run {
                out!(
                    "would stop the Windows service {0} if it runs (its jobs stop as on Ctrl-C) and remove it",
                    WindowsService::NAME
                );
                return Ok(0);
            }
            service::uninstall(&|m| ctx.say(m))?;
            Ok(0)
        }
        ServiceCommand::Status => {
            print_status(ctx, &service::status()?);
            Ok(0)
        }
    }
}

/// Where the systemd unit or launchd agent goes.
#[cfg(not(windows))]
fn unix_definition_path() -> PathBuf {
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

#[cfg(not(windows))]
fn try_run(ctx: &Ctx, command: &[String]) -> bool {
    match std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
    {
        Ok(s) if s.success() => true,
        Ok(s) => {
            ctx.say(format!("`{}` failed ({s})", command.join(" ")));
            false
        }
        Err(e) => {
            ctx.say(format!("could not run {}: {e}", command[0]));
            false
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
    }

    #[test]
    fn windows_arguments_are_quoted_as_windows_splits_them() {
        for (arg, quoted) in [
            (r"C:\Users\alice\jobs.toml", r"C:\Users\alice\jobs.toml"),
            (
                r"C:\Program Files\Backazon\backazon.exe",
                r#""C:\Program Files\Backazon\backazon.exe""#,
            ),
            ("", r#""""#),
            (r#"say "hi""#, r#""say \"hi\"""#),
            (r"C:\with space\", r#""C:\with space\\""#),
            (r#"a\"b c"#, r#""a\\\"b c""#),
            (r"a\\b c", r#""a\\b c""#),
        ] {
            assert_eq!(windows_quote(arg), quoted, "{arg}");
        }
    }

    #[test]
    fn the_windows_service_runs_the_users_jobs_with_the_users_folders() {
        let user = RunArgs {
            profile: Some(r"C:\Users\Alice Smith".into()),
            appdata: Some(r"C:\Users\Alice Smith\AppData\Roaming".into()),
            local_appdata: Some(r"C:\Users\Alice Smith\AppData\Local".into()),
        };
        let svc = WindowsService::new(
            Path::new(r"C:\Program Files\Backazon\backazon.exe"),
            Path::new(r"C:\Users\Alice Smith\AppData\Roaming\backazon\jobs.toml"),
            Path::new(r"C:\Users\Alice Smith\AppData\Local\backazon\state"),
            None,
            &user,
        );
        assert_eq!(
            svc.command_line(),
            r#""C:\Program Files\Backazon\backazon.exe" --config "C:\Users\Alice Smith\AppData\Roaming\backazon\jobs.toml" --state-dir "C:\Users\Alice Smith\AppData\Local\backazon\state" service run --profile "C:\Users\Alice Smith" --appdata "C:\Users\Alice Smith\AppData\Roaming" --local-appdata "C:\Users\Alice Smith\AppData\Local""#
        );
        let text = svc.describe(true);
        assert!(text.contains(&format!("command line:  {}\n", svc.command_line())));
        assert!(text.contains("LocalSystem") && text.contains("start it now"));
        assert!(!svc.describe(false).contains("start it now"));
    }
}
