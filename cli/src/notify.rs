//! Telling someone how a job's run ended, as the job's `[jobs.NAME.notify]` says: a
//! webhook (a JSON summary POSTed to a URL), a healthchecks-style ping (URL/start when a
//! run starts, URL when it ends well, URL/fail when it fails) and email over SMTP
//! (STARTTLS by default). A notifier that fails is logged and recorded with the run; it
//! never fails the backup.

use std::path::PathBuf;

#[cfg(not(feature = "console"))]
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::jobs::RunRecord;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Which ends of a run are told: `failure` (failed or interrupted), `warning` (done,
    /// with files skipped) and `success`. Default: failure and warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A healthchecks.io-style check URL: pinged at every start and end, whatever `on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthchecks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    /// The SMTP server's name.
    pub server: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 with none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` (TLS from the first byte), or `none` (only to a
    /// server on this computer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The SMTP password, first line of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A PEM certificate to trust besides the system's (a server with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// How a run ended, as `on` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Success,
    Warning,
    Failure,
    /// The console's "send test" button.
    Test,
}

impl Event {
    pub fn of(rec: &RunRecord) -> Event {
        match rec.result.as_str() {
            "success" => Event::Success,
            "partial" => Event::Warning,
            _ => Event::Failure,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Event::Success => "success",
            Event::Warning => "warning",
            Event::Failure => "failure",
            Event::Test => "test",
        }
    }
}

const EVENTS: [&str; 3] = ["failure", "warning", "success"];

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl Notify {
    pub fn is_empty(&self) -> bool {
        *self == Notify::default()
    }

    /// Checks the settings; `Err((key under notify, message))`.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        for e in &self.on {
            if !EVENTS.contains(&e.as_str()) {
                return Err(("on", format!("{e:?} is not one of {}", EVENTS.join(", "))));
            }
        }
        for (key, url) in [
            ("webhook", &self.webhook),
            ("healthchecks", &self.healthchecks),
        ] {
            if let Some(u) = url.as_deref().filter(|u| !is_http(u)) {
                return Err((key, format!("{u:?} is not an http:// or https:// URL")));
            }
        }
        if let Some(m) = &self.email {
            if m.to.is_empty() {
                return Err(("email.to", "names nobody".into()));
            }
            for a in m.to.iter().chain([&m.from]) {
                a.parse::<lettre::message::Mailbox>()
                    .map_err(|e| ("email.to", format!("{a:?}: {e}")))?;
            }
            if m.server.trim().is_empty() {
                return Err(("email.server", "is empty".into()));
            }
            match m.security.as_deref() {
                None | Some("starttls" | "tls") => {}
                Some("none") if is_loopback(&m.server) => {}
                Some("none") => {
                    return Err((
                        "email.security",
                        "\"none\" sends the message and password in the clear: only to a \
                         server on this computer (localhost); use starttls or tls"
                            .into(),
                    ))
                }
                Some(s) => {
                    return Err((
                        "email.security",
                        format!("{s:?} is not starttls, tls or none"),
                    ))
                }
            }
            if m.username.is_some() != m.password_file.is_some() {
                return Err((
                    "email.password_file",
                    "give both username and password_file, or neither".into(),
                ));
            }
        }
        Ok(())
    }

    fn wants(&self, e: Event) -> bool {
        match e {
            Event::Test => true,
            _ if self.on.is_empty() => matches!(e, Event::Failure | Event::Warning),
            _ => self.on.iter().any(|w| w == e.word()),
        }
    }

    /// Pings the healthchecks URL's `/start`; a failure is returned for the log.
    pub fn started(&self) -> Option<String> {
        let url = self.healthchecks.as_ref()?;
        post(
            &format!("{}/start", url.trim_end_matches('/')),
            "text/plain",
            Vec::new(),
        )
        .err()
        .map(|e| format!("healthchecks start ping: {e:#}"))
    }

    /// Tells everyone configured how the run ended; returns what failed, one sentence each.
    pub fn finished(&self, job: &str, host: &str, rec: &RunRecord, event: Event) -> Vec<String> {
        let mut failed = Vec::new();
        if let Some(url) = &self.healthchecks {
            let url = url.trim_end_matches('/');
            let target = match event {
                Event::Failure => format!("{url}/fail"),
                _ => url.to_string(),
            };
            let text = rec
                .summary
                .clone()
                .or(rec.error.clone())
                .unwrap_or_default();
            if let Err(e) = post(&target, "text/plain", text.into_bytes()) {
                failed.push(format!("healthchecks ping: {e:#}"));
            }
        }
        if !self.wants(event) {
            return failed;
        }
        if let Some(url) = &self.webhook {
            let body = serde_json::json!({
                "job": job,
                "host": host,
                "event": event.word(),
                "result": rec.result,
                "started": rec.started,
                "finished": rec.finished,
                "snapshot": rec.snapshot,
                "summary": rec.summary,
                "error": rec.error,
                "stats": rec.stats,
            });
            if let Err(e) = post(url, "application/json", body.to_string().into_bytes()) {
                failed.push(format!("webhook: {e:#}"));
            }
        }
        if let Some(m) = &self.email {
            if let Err(e) = send_mail(m, job, host, rec, event) {
                failed.push(format!("email: {e:#}"));
            }
        }
        failed
    }
}

fn is_loopback(server: &str) -> bool {
    matches!(server, "localhost" | "127.0.0.1" | "::1")
}

/// How messages leave: over HTTP(S) and SMTP, in the program; the fuzz targets'
/// build (without the `console` feature) parses the settings but sends nothing.
#[cfg(feature = "console")]
mod send;
#[cfg(feature = "console")]
use send::{post, send_mail};

#[cfg(not(feature = "console"))]
fn post(_: &str, _: &str, _: Vec<u8>) -> Result<()> {
    bail!("this build of backazon sends no notifications (built without `console`)")
}

#[cfg(not(feature = "console"))]
fn send_mail(_: &Email, _: &str, _: &str, _: &RunRecord, _: Event) -> Result<()> {
    bail!("this build of backazon sends no notifications (built without `console`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_warnings_are_told_by_default_and_success_when_asked() {
        let mut n = Notify::default();
        assert!(n.wants(Event::Failure) && n.wants(Event::Warning) && !n.wants(Event::Success));
        n.on = vec!["success".into()];
        assert!(n.wants(Event::Success) && !n.wants(Event::Failure));
        assert!(n.wants(Event::Test));
    }

    #[test]
    fn settings_are_checked() {
        let mut n = Notify {
            webhook: Some("ftp://x".into()),
            ..Default::default()
        };
        assert_eq!(n.validate().unwrap_err().0, "webhook");
        n.webhook = Some("https://hooks.example/x".into());
        n.on = vec!["failed".into()];
        assert_eq!(n.validate().unwrap_err().0, "on");
        n.on = vec!["failure".into(), "success".into()];
        n.email = Some(Email {
            to: vec!["me@example.com".into()],
            from: "backazon@example.com".into(),
            server: "smtp.example.com".into(),
            security: Some("none".into()),
            ..Default::default()
        });
        assert_eq!(n.validate().unwrap_err().0, "email.security");
        n.email.as_mut().unwrap().server = "localhost".into();
        assert!(n.validate().is_ok());
        n.email.as_mut().unwrap().to = vec!["not an address".into()];
        assert_eq!(n.validate().unwrap_err().0, "email.to");
    }
}
