//! Sending notifications: a POST over hyper with rustls, email through lettre.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Email, Event};
use crate::jobs::RunRecord;

/// How long one notifier may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// POSTs `body` to `url`, once more after a pause if the first try fails; a status
/// other than 2xx is a failure.
pub(super) fn post(url: &str, content_type: &str, body: Vec<u8>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting an HTTP client")?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("reading the system's root certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let once = || async {
        let req = axum::http::Request::post(url)
            .header("content-type", content_type)
            .header(
                "user-agent",
                concat!("backazon/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(axum::body::Bytes::from(body.clone())))
            .with_context(|| format!("{url} is not a URL"))?;
        let resp = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| anyhow!("{url}: no answer in {} s", TIMEOUT.as_secs()))?
            .map_err(|e| anyhow!("{url}: {}", root_cause(&e)))?;
        let status = resp.status();
        let _ = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await;
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        Ok(())
    };
    rt.block_on(async {
        match once().await {
            Ok(()) => Ok(()),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                once().await
            }
        }
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

pub(super) fn send_mail(
    m: &Email,
    job: &str,
    host: &str,
    rec: &RunRecord,
    event: Event,
) -> Result<()> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};

    let subject = match event {
        Event::Test => format!("Backazon: test message for job {job} on {host}"),
        Event::Failure => format!("Backazon: job {job} on {host} FAILED"),
        Event::Warning => format!("Backazon: job {job} on {host} finished with warnings"),
        Event::Success => format!("Backazon: job {job} on {host} succeeded"),
    };
    let mut text = format!(
        "Job: {job}\nHost: {host}\nResult: {}\nStarted: {}\n",
        rec.result, rec.started
    );
    for (k, v) in [
        ("Finished", &rec.finished),
        ("Snapshot", &rec.snapshot),
        ("Summary", &rec.summary),
        ("Error", &rec.error),
    ] {
        if let Some(v) = v {
            text.push_str(&format!("{k}: {v}\n"));
        }
    }
    let mut msg = Message::builder()
        .from(m.from.parse().context("the from address")?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &m.to {
        msg = msg.to(to.parse().with_context(|| format!("the address {to:?}"))?);
    }
    let msg = msg.body(text).context("building the message")?;

    let security = m.security.as_deref().unwrap_or("starttls");
    let tls = || -> Result<TlsParameters> {
        let mut b = TlsParameters::builder(m.server.clone());
        if let Some(ca) = &m.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b.add_root_certificate(
                Certificate::from_pem(&pem).with_context(|| format!("{}", ca.display()))?,
            );
        }
        b.build_rustls().context("setting up TLS")
    };
    let (tls, port) = match security {
        "tls" => (Tls::Wrapper(tls()?), 465),
        "none" => (Tls::None, 25),
        _ => (Tls::Required(tls()?), 587),
    };
    let mut t = SmtpTransport::builder_dangerous(m.server.as_str())
        .port(m.port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if let (Some(user), Some(pw)) = (&m.username, &m.password_file) {
        let text =
            std::fs::read_to_string(pw).with_context(|| format!("reading {}", pw.display()))?;
        let pass = text.lines().next().unwrap_or("").to_string();
        t = t.credentials(Credentials::new(user.clone(), pass));
    }
    t.build().send(&msg).map_err(|e| {
        anyhow!(
            "sending through {}:{}: {}",
            m.server,
            m.port.unwrap_or(port),
            root_cause(&e)
        )
    })?;
    Ok(())
}
