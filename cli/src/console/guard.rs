//! Who may use the console. Every request needs the token printed at start (in the
//! address's `?token=`, which trades it for a session cookie, or as `Authorization:
//! Bearer`) or that session; anything else is 401. A `Host` that is not this server's
//! is refused (a DNS-rebinding page would otherwise reach it as its own origin). A
//! request that changes something must come from the console's own page: the cookie
//! is `SameSite=Strict`, an `Origin` other than this server's is refused, and the
//! page's requests carry a header a cross-site form cannot set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Console;

const COOKIE: &str = "backazon_session";
/// Set by the console's page on every request that changes something.
pub const PAGE_HEADER: &str = "x-backazon";

/// Equal without saying where they first differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{why}\n"),
    )
        .into_response()
}

fn cookie_session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// A session unused this long is closed: the printed address (or the password) opens
/// another. The page's open event stream counts as use only when it connects.
const IDLE: Duration = Duration::from_secs(12 * 3600);

/// A new session, and the cookie that carries it (`Secure` over TLS); `None` when the
/// OS gave no random bytes. Sessions gone idle are forgotten.
fn new_session(c: &Console) -> Option<String> {
    let session = super::secret().ok()?;
    let mut sessions = c.sessions.lock().unwrap();
    sessions.retain(|_, used| used.elapsed() < IDLE);
    sessions.insert(session.clone(), Instant::now());
    let secure = if c.remote.is_some() { "; Secure" } else { "" };
    Some(format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
}

/// Whether the request's cookie names an open session, which it keeps open.
fn in_session(c: &Console, headers: &HeaderMap) -> bool {
    let Some(s) = cookie_session(headers) else {
        return false;
    };
    let mut sessions = c.sessions.lock().unwrap();
    match sessions.get_mut(s) {
        Some(used) if used.elapsed() < IDLE => {
            *used = Instant::now();
            true
        }
        Some(_) => {
            sessions.remove(s);
            false
        }
        None => false,
    }
}

/// "Sign out": the session ends here and in the browser.
pub async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(s) = cookie_session(&headers) {
        c.sessions.lock().unwrap().remove(s);
    }
    let secure = if c.remote.is_some() { "; Secure" } else { "" };
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        )],
    )
        .into_response()
}

pub async fn guard(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    // On 127.0.0.1 without a password, only this server's own names: a page whose name
    // is rebound to 127.0.0.1 is refused. With --listen the password guards it, and the
    // computer's names are not known here.
    if c.remote.is_none() && !c.hosts.contains(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "unknown Host: open the console's own address",
        );
    }
    let own = format!(
        "{}://{host}",
        if c.remote.is_some() { "https" } else { "http" }
    );
    if let Some(o) = headers.get(header::ORIGIN) {
        if !matches!(*req.method(), Method::GET | Method::HEAD)
            && o.to_str().ok() != Some(own.as_str())
        {
            return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
    }
    // The sign-in page and its style need no session.
    let path = req.uri().path().to_string();
    if c.remote.is_some() && (path == "/login" || path == "/app.css") {
        return with_headers(next.run(req).await);
    }
    // The printed address: trade its token for a session and drop it from the address bar.
    if let Some(t) = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    }) {
        if !same(&t, &c.token) {
            return refuse(StatusCode::UNAUTHORIZED, "wrong token");
        }
        let Some(cookie) = new_session(&c) else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no random bytes");
        };
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, req.uri().path().to_string()),
                (header::SET_COOKIE, cookie),
                (header::CACHE_CONTROL, "no-store".into()),
            ],
        )
            .into_response();
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t, &c.token));
    let session = in_session(&c, headers);
    if !bearer && !session {
        if c.remote.is_some() && path == "/" {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "open the address `backazon ui` printed (it holds the access token)",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        // A bearer token is never sent by a browser on its own; a cookie is.
        if !bearer && !headers.contains_key(PAGE_HEADER) {
            return refuse(
                StatusCode::FORBIDDEN,
                "request refused: not from the console's page",
            );
        }
    }
    with_headers(next.run(req).await)
}

/// What every answer carries: no script, style or frame from elsewhere, no referrer,
/// nothing cached.
fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

const LOGIN: &str = include_str!("page/login.html");

pub async fn login_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        LOGIN.replace("{message}", ""),
    )
        .into_response()
}

/// Wrong passwords wait longer and longer before they are answered: 0.5 s after the
/// first, doubling to at most 30 s, one attempt at a time.
fn pause_after(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(500u64 << (n - 1).min(6)).min(Duration::from_secs(30)),
    }
}

/// The sign-in form (`--listen`): the password opens a session.
pub async fn login(State(c): State<Arc<Console>>, body: String) -> Response {
    let Some(remote) = &c.remote else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no sign-in here: open the printed address",
        );
    };
    let given = zeroize::Zeroizing::new(
        form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default(),
    );
    let mut failures = remote.failures.lock().await;
    tokio::time::sleep(pause_after(*failures)).await;
    if !same(&given, &remote.password) {
        *failures += 1;
        let page = LOGIN.replace(
            "{message}",
            r#"<p class="err error-text">Wrong password.</p>"#,
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response();
    }
    *failures = 0;
    match new_session(&c) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, cookie),
            ],
        )
            .into_response(),
        None => refuse(StatusCode::INTERNAL_SERVER_ERROR, "no random bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passwords_wait_longer_each_time_up_to_half_a_minute() {
        assert_eq!(pause_after(0).as_millis(), 0);
        assert_eq!(pause_after(1).as_millis(), 500);
        assert_eq!(pause_after(2).as_millis(), 1000);
        assert_eq!(pause_after(6).as_millis(), 16000);
        assert_eq!(pause_after(7).as_secs(), 30);
        assert_eq!(pause_after(50).as_secs(), 30);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; backazon_session=xyz; b=2"),
        );
        assert_eq!(cookie_session(&h), Some("xyz"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("backazon_sessionx=1"),
        );
        assert_eq!(cookie_session(&h), None);
    }
}
