//! Servers on 127.0.0.1 that notifications are sent to in the tests: a webhook receiver
//! (HTTP/1.1, answers 200 to every POST) and an SMTP server that insists on STARTTLS
//! (with the test certificate in tests/fixtures/tls) before it takes a message. Each
//! keeps what it received for the test to look at.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test certificate (for `localhost` and `127.0.0.1`), for a job's `ca_file`.
pub fn test_cert() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/cert.pem")
}

fn wait_for<T: Clone>(
    got: &Mutex<Vec<T>>,
    want: impl Fn(&T) -> bool,
    timeout: Duration,
) -> Option<T> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(x) = got.lock().unwrap().iter().find(|x| want(x)) {
            return Some(x.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A request the webhook receiver got: its request line and its body.
#[derive(Clone, Debug)]
pub struct Hook {
    pub line: String,
    pub body: String,
}

pub struct Webhook {
    pub url: String,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if let Some(h) = read_request(s) {
                    g.lock().unwrap().push(h);
                }
            }
        });
        Webhook { url, got }
    }

    /// The first request `want` accepts, waiting up to `timeout` for it.
    pub fn wait_for(&self, want: impl Fn(&Hook) -> bool, timeout: Duration) -> Option<Hook> {
        wait_for(&self.got, want, timeout)
    }

    pub fn all(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}

fn read_request(mut s: TcpStream) -> Option<Hook> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Hook {
        line: line.trim_end().to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A message the SMTP server took: the envelope and the text, and whether it came
/// over TLS and after a login.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub tls: bool,
    pub auth: Option<String>,
}

pub struct Smtp {
    pub port: u16,
    got: Arc<Mutex<Vec<Mail>>>,
}

impl Smtp {
    pub fn start() -> Smtp {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certs = CertificateDer::pem_file_iter(test_cert())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(test_cert().with_file_name("key.pem")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (g, config) = (g.clone(), config.clone());
                std::thread::spawn(move || {
                    let _ = smtp_session(s, config, &g);
                });
            }
        });
        Smtp { port, got }
    }

    pub fn wait_for(&self, want: impl Fn(&Mail) -> bool, timeout: Duration) -> Option<Mail> {
        wait_for(&self.got, want, timeout)
    }
}

fn smtp_session(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    got: &Mutex<Vec<Mail>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut w = tcp.try_clone()?;
    let mut r = BufReader::new(tcp);
    w.write_all(b"220 localhost ESMTP test server\r\n")?;
    // In the clear, only the greeting and STARTTLS: a message must wait for TLS.
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            w.write_all(b"250-localhost\r\n250-STARTTLS\r\n250 8BITMIME\r\n")?;
        } else if cmd == "STARTTLS" {
            w.write_all(b"220 go ahead\r\n")?;
            break;
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"530 5.7.0 must issue STARTTLS first\r\n")?;
        }
    }
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut s = BufReader::new(rustls::StreamOwned::new(conn, r.into_inner()));
    let mut mail = Mail {
        from: String::new(),
        to: Vec::new(),
        data: String::new(),
        tls: true,
        auth: None,
    };
    loop {
        let mut line = String::new();
        if s.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.trim_end().to_string();
        let cmd = text.to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            b"250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        } else if cmd.starts_with("AUTH PLAIN") {
            mail.auth = Some(text[10..].trim().to_string());
            b"235 2.7.0 accepted\r\n"
        } else if cmd.starts_with("MAIL FROM:") {
            mail.from = text[10..].trim().to_string();
            b"250 ok\r\n"
        } else if cmd.starts_with("RCPT TO:") {
            mail.to.push(text[8..].trim().to_string());
            b"250 ok\r\n"
        } else if cmd == "DATA" {
            s.get_mut().write_all(b"354 go on\r\n")?;
            s.get_mut().flush()?;
            loop {
                let mut l = String::new();
                if s.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                mail.data.push_str(&l);
            }
            got.lock().unwrap().push(mail.clone());
            b"250 queued\r\n"
        } else if cmd == "QUIT" {
            s.get_mut().write_all(b"221 bye\r\n")?;
            s.get_mut().flush()?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        s.get_mut().write_all(reply)?;
        s.get_mut().flush()?;
    }
}
