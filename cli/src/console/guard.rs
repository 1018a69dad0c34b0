//! Who may use the console. Every request needs the token printed at start (in the
//! address's `?token=`, which trades it for a session cookie, or as `Authorization:
//! Bearer`) or that session; anything else is 401. A `Host` that is not this server's
//! is refused (a DNS-rebinding page would otherwise reach it as its own origin). A
//! request that changes something must come from the console's own page: the cookie
//! is `SameSite=Strict`, an `Origin` other than this server's is refused, and the
//! page's requests carry a header a cross-site form cannot set.

use std::sync::Arc;

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

pub async fn guard(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !c.hosts.iter().any(|h| h == host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "unknown Host: open the console's own address",
        );
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
        let Ok(session) = super::secret() else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no random bytes");
        };
        c.sessions.lock().unwrap().insert(session.clone());
        let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
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
    let session = cookie_session(headers).is_some_and(|s| c.sessions.lock().unwrap().contains(s));
    if !bearer && !session {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "open the address `backazon ui` printed (it holds the access token)",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let own = format!("http://{host}");
        if let Some(o) = headers.get(header::ORIGIN) {
            if o.to_str().ok() != Some(own.as_str()) {
                return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
        // A bearer token is never sent by a browser on its own; a cookie is.
        if !bearer && !headers.contains_key(PAGE_HEADER) {
            return refuse(
                StatusCode::FORBIDDEN,
                "request refused: not from the console's page",
            );
        }
    }
    let mut resp = next.run(req).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
