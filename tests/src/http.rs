//! Plain HTTP/1.1 requests for the tests of the web console: one request per
//! connection, over TCP or over TLS trusting the test certificate.

use std::io::{Read, Write};
use std::net::TcpStream;

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// The body as it came.
    pub bytes: Vec<u8>,
}

/// One HTTP/1.1 request over a fresh connection; `headers` are whole lines.
pub fn http(host: &str, method: &str, path: &str, headers: &[String], body: &str) -> Reply {
    exchange(
        TcpStream::connect(host).unwrap(),
        host,
        method,
        path,
        headers,
        body,
    )
}

/// The same over TLS, trusting the test certificate.
pub fn https(host: &str, method: &str, path: &str, headers: &[String], body: &str) -> Reply {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::CertificateDer::pem_file_iter(crate::listeners::test_cert()).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, TcpStream::connect(host).unwrap());
    exchange(tls, host, method, path, headers, body)
}

fn exchange(
    mut s: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify; what arrived is what counts.
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let bytes = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
    }
}
