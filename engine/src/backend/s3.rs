//! A repository in an S3 bucket (AWS or any S3-compatible server) through aws-sdk-s3:
//! the same object names as the local folder under `prefix/`. Credentials, region and
//! endpoint come from the standard AWS chain (environment, shared config and credential
//! files, profiles) unless given. A PUT is atomic: an object exists only once its upload
//! succeeded, so nothing half-written is ever listed or read.
//!
//! Transient failures (5xx, SlowDown, timeouts, connection resets) are retried by the
//! SDK with exponential backoff and jitter; a reset while a response body streams in is
//! retried here. Refusals (bad credentials, no permission, no such bucket) are not
//! retried and say which bucket and what was refused.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{Backend, BackendStats, Kind};
use crate::error::{Error, Result};

/// Where an S3 repository is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Folder inside the bucket ("" for the bucket's root).
    pub prefix: String,
    /// An S3-compatible server (`http://nas:3900`); AWS when unset (or AWS_ENDPOINT_URL).
    pub endpoint: Option<String>,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub path_style: bool,
    /// Region; from AWS_REGION or the profile when unset.
    pub region: Option<String>,
    /// Requests in flight at once.
    pub connections: usize,
    /// Attempts per request before giving up (the first one included).
    pub max_attempts: u32,
    /// An access key id and secret to use instead of the standard credential chain.
    pub credentials: Option<(String, String)>,
}

impl S3Options {
    /// Parses `s3://bucket/prefix/...`.
    pub fn from_url(url: &str) -> Result<S3Options> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::Invalid(format!("{url}: an S3 repository is s3://bucket/prefix"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!("{url}: no bucket name")));
        }
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            connections: 8,
            max_attempts: 8,
            ..S3Options::default()
        })
    }
}

/// Requests and payload bytes, counted as they happen (retries included).
#[derive(Default, Debug)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    head: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Attempts after an operation's first: the SDK's and those of [`S3Backend::get`].
    retries: AtomicU64,
}

/// Counts every HTTP request the SDK sends, attempts included.
#[derive(Debug)]
struct CountRequests(Arc<Counters>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "backazon-count-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let c = &self.0;
        let counter = match context.request().method() {
            "PUT" | "POST" => &c.put,
            "DELETE" => &c.delete,
            "HEAD" => &c.head,
            _ if context.request().uri().contains("list-type=") => &c.list,
            _ => &c.get,
        };
        counter.fetch_add(1, Relaxed);
        let attempt = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(1, |a| a.attempts());
        if attempt > 1 {
            c.retries.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

pub struct S3Backend {
    rt: tokio::runtime::Runtime,
    client: Client,
    opts: S3Options,
    counters: Arc<Counters>,
}

impl S3Backend {
    pub fn new(opts: S3Options) -> Result<S3Backend> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.connections.clamp(1, 4))
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("cannot start the S3 client: {e}")))?;
        let counters = Arc::new(Counters::default());
        let client = rt.block_on(async {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(opts.max_attempts.max(1))
                        .with_initial_backoff(Duration::from_millis(100))
                        .with_max_backoff(Duration::from_secs(10)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .read_timeout(Duration::from_secs(60))
                        .operation_attempt_timeout(Duration::from_secs(300))
                        .build(),
                );
            if let Some(e) = &opts.endpoint {
                loader = loader.endpoint_url(e);
            }
            if let Some(r) = &opts.region {
                loader = loader.region(Region::new(r.clone()));
            }
            if let Some((id, secret)) = &opts.credentials {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    id, secret, None, None, "backazon",
                ));
            }
            let shared = loader.load().await;
            // Bounded by attempts per request only: the SDK's shared retry quota would
            // stop retrying a long backup over a flaky link after about a hundred retries.
            let partition = aws_sdk_s3::config::retry::RetryPartition::custom("backazon")
                .token_bucket(aws_sdk_s3::config::retry::TokenBucket::unlimited())
                .build();
            let mut conf = aws_sdk_s3::config::Builder::from(&shared)
                .retry_partition(partition)
                .force_path_style(opts.path_style)
                .interceptor(CountRequests(counters.clone()));
            if shared.region().is_none() {
                // An S3-compatible server named by endpoint only: sign for the usual default.
                conf = conf.region(Region::new("us-east-1"));
            }
            Client::from_conf(conf.build())
        });
        Ok(S3Backend {
            rt,
            client,
            opts,
            counters,
        })
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        let mut k = String::new();
        if !self.opts.prefix.is_empty() {
            k.push_str(&self.opts.prefix);
            k.push('/');
        }
        match kind {
            Kind::Config => k.push_str("config"),
            Kind::Pack => {
                k.push_str("data/");
                k.push_str(&name[..name.len().min(2)]);
                k.push('/');
                k.push_str(name);
            }
            _ => {
                k.push_str(kind.dir());
                k.push('/');
                k.push_str(name);
            }
        }
        k
    }

    fn folder(&self, kind: Kind) -> String {
        if self.opts.prefix.is_empty() {
            format!("{}/", kind.dir())
        } else {
            format!("{}/{}/", self.opts.prefix, kind.dir())
        }
    }

    /// An SDK error as a message a user can act on: what was refused, in which bucket.
    fn error<E>(&self, op: &str, key: &str, e: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let bucket = &self.opts.bucket;
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().unwrap_or_default().to_string();
        match (status, code.as_str()) {
            (_, "NoSuchBucket") => Error::Backend(format!(
                "bucket {bucket} does not exist{} (create it first)",
                self.endpoint_note()
            )),
            (_, "NoSuchKey") | (Some(404), _) => {
                Error::NotFound(format!("{} is missing", self.url_of(key)))
            }
            (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")
            | (Some(401 | 403), _) => Error::Backend(format!(
                "S3 refused to {op} {} ({}{}): check the credentials (AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or the profile) and the bucket's permissions",
                self.url_of(key),
                if code.is_empty() {
                    "HTTP 403".to_string()
                } else {
                    code.clone()
                },
                e.message().map(|m| format!(": {m}")).unwrap_or_default(),
            )),
            _ => {
                let tries = self.opts.max_attempts;
                let url = self.url_of(key);
                let server = self.endpoint_note();
                match &e {
                    SdkError::DispatchFailure(d) if d.is_timeout() => Error::Unreachable(format!(
                        "the S3 server{server} did not answer in time to {op} {url} \
                         ({tries} tries): check the network and that the server is up"
                    )),
                    SdkError::TimeoutError(_) => Error::Unreachable(format!(
                        "the S3 server{server} did not answer in time to {op} {url} \
                         ({tries} tries): check the network and that the server is up"
                    )),
                    SdkError::DispatchFailure(_) => Error::Unreachable(format!(
                        "cannot reach the S3 server{server} to {op} {url}: {} ({tries} \
                         tries): check that the server is running and reachable, and the \
                         endpoint (--s3-endpoint)",
                        root_cause(&e)
                    )),
                    _ => {
                        let msg = format!(
                            "the S3 server{server} failed to {op} {url}{}: {} ({tries} tries)",
                            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
                            e.message()
                                .map(str::to_string)
                                .unwrap_or_else(|| root_cause(&e)),
                        );
                        // A server error after every retry: it may well answer later.
                        if status.is_some_and(|s| s >= 500) {
                            Error::Unreachable(msg)
                        } else {
                            Error::Backend(msg)
                        }
                    }
                }
            }
        }
    }

    fn endpoint_note(&self) -> String {
        self.opts
            .endpoint
            .as_ref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default()
    }

    fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.opts.bucket)
    }

    /// A GET of the whole object or of `range`; a body cut off midway is fetched again.
    fn get(&self, key: &str, range: Option<(u64, usize)>) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self
                .client
                .get_object()
                .bucket(&self.opts.bucket)
                .key(key)
                .set_range(range.map(|(o, l)| format!("bytes={o}-{}", o + l as u64 - 1)));
            // The SDK retries the request; a body cut off after the response began is
            // this loop's to retry.
            let result = self.rt.block_on(async {
                let out = req
                    .send()
                    .await
                    .map_err(|e| GetFailure::Failed(self.error("read", key, e)))?;
                out.body
                    .collect()
                    .await
                    .map(|b| Vec::from(b.into_bytes()))
                    .map_err(|e| GetFailure::Cut(format!("reading {}: {e}", self.url_of(key))))
            });
            let data = match result {
                Ok(data) => data,
                Err(GetFailure::Cut(_)) if attempt < self.opts.max_attempts => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    std::thread::sleep(backoff(attempt));
                    continue;
                }
                Err(GetFailure::Cut(why)) => return Err(Error::Backend(why)),
                Err(GetFailure::Failed(e) | GetFailure::Sink(e)) => return Err(e),
            };
            self.counters
                .bytes_received
                .fetch_add(data.len() as u64, Relaxed);
            if let Some((o, l)) = range {
                if data.len() != l {
                    return Err(Error::corrupt(
                        self.url_of(key),
                        format!("object is truncated (wanted bytes {o}..{})", o + l as u64),
                    ));
                }
            }
            return Ok(data);
        }
    }
}

/// How a GET went wrong: the request failed (already retried by the SDK), the body
/// was cut off after the response began (retried by [`S3Backend::get`] and
/// `read_range_to`), or the receiver of a streamed body refused it.
enum GetFailure {
    Failed(Error),
    Cut(String),
    Sink(Error),
}

/// Exponential backoff with jitter, for retries made here rather than by the SDK.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(7);
    let mut b = [0u8; 2];
    crate::crypto::fill_random(&mut b);
    Duration::from_millis(base / 2 + u16::from_le_bytes(b) as u64 % base.max(1))
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        let mut s = format!("s3://{}", self.opts.bucket);
        if !self.opts.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.opts.prefix);
        }
        s + &self.endpoint_note()
    }

    fn create(&self) -> Result<()> {
        let bucket = &self.opts.bucket;
        self.rt
            .block_on(self.client.head_bucket().bucket(bucket).send())
            .map_err(|e| match e.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => Error::Backend(format!(
                    "bucket {bucket} does not exist{} (create it first)",
                    self.endpoint_note()
                )),
                _ => self.error("open", "", e),
            })?;
        if self.exists(Kind::Config, "config")? {
            return Err(Error::RepositoryExists(self.location()));
        }
        Ok(())
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.get(&self.key(kind, name), None)
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: usize) -> Result<Vec<u8>> {
        if length == 0 {
            return Ok(Vec::new());
        }
        self.get(&self.key(kind, name), Some((offset, length)))
    }

    fn read_range_to(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        length: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let key = self.key(kind, name);
        let mut done = 0usize;
        let mut attempt = 0;
        while done < length {
            attempt += 1;
            let from = offset + done as u64;
            let req = self
                .client
                .get_object()
                .bucket(&self.opts.bucket)
                .key(&key)
                .range(format!("bytes={from}-{}", offset + length as u64 - 1));
            // The body is pulled piece by piece and `sink` runs outside the runtime: it
            // may read from this backend itself (a blob read again after a failed check).
            let result = (|| -> std::result::Result<(), GetFailure> {
                let out = self
                    .rt
                    .block_on(req.send())
                    .map_err(|e| GetFailure::Failed(self.error("read", &key, e)))?;
                let mut body = out.body;
                while let Some(piece) = self.rt.block_on(body.next()) {
                    let piece = piece.map_err(|e| {
                        GetFailure::Cut(format!("reading {}: {e}", self.url_of(&key)))
                    })?;
                    let take = piece.len().min(length - done);
                    sink(&piece[..take]).map_err(GetFailure::Sink)?;
                    done += take;
                    self.counters.bytes_received.fetch_add(take as u64, Relaxed);
                }
                Ok(())
            })();
            match result {
                Ok(()) if done == length => return Ok(()),
                // Fewer bytes than asked for: the object is shorter than its index says.
                Ok(()) => {
                    return Err(Error::corrupt(
                        self.url_of(&key),
                        format!(
                            "object is truncated (wanted bytes {offset}..{})",
                            offset + length as u64
                        ),
                    ))
                }
                Err(GetFailure::Cut(_)) if attempt < self.opts.max_attempts => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    std::thread::sleep(backoff(attempt));
                }
                Err(GetFailure::Cut(why)) => return Err(Error::Backend(why)),
                Err(GetFailure::Failed(e) | GetFailure::Sink(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let key = self.key(kind, name);
        let req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(&key)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data.to_vec()));
        self.rt
            .block_on(req.send())
            .map_err(|e| self.error("write", &key, e))?;
        self.counters
            .bytes_sent
            .fetch_add(data.len() as u64, Relaxed);
        Ok(())
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let prefix = match kind {
            Kind::Config => return Ok(Vec::new()),
            _ => self.folder(kind),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .list_objects_v2()
                .bucket(&self.opts.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take());
            let page = self
                .rt
                .block_on(req.send())
                .map_err(|e| self.error("list", &prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let name = key.rsplit('/').next().unwrap_or(key);
                if !name.is_empty() && !name.starts_with('.') {
                    out.push((name.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.opts.bucket)
                    .key(&key)
                    .send(),
            )
            .map_err(|e| self.error("remove", &key, e))?;
        Ok(())
    }

    fn exists(&self, kind: Kind, name: &str) -> Result<bool> {
        let key = self.key(kind, name);
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.opts.bucket)
                .key(&key)
                .send(),
        ) {
            Ok(_) => Ok(true),
            Err(e) => match self.error("check", &key, e) {
                Error::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    fn stats(&self) -> Option<BackendStats> {
        let c = &self.counters;
        Some(BackendStats {
            puts: c.put.load(Relaxed),
            gets: c.get.load(Relaxed),
            lists: c.list.load(Relaxed),
            deletes: c.delete.load(Relaxed),
            heads: c.head.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            retries: c.retries.load(Relaxed),
        })
    }

    fn concurrency(&self) -> usize {
        self.opts.connections.max(1)
    }

    fn prefers_large_reads(&self) -> bool {
        true
    }
}

/// The innermost cause of an error, in its own words ("Connection refused (os error
/// 111)"), without the SDK's layers and debug structures around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() {
        DisplayErrorContext(e).to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = S3Options::from_url("s3://bucket/some/prefix/").unwrap();
        assert_eq!(
            (o.bucket.as_str(), o.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        let o = S3Options::from_url("s3://bucket").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", ""));
        assert!(S3Options::from_url("s3:///x").is_err());
        assert!(S3Options::from_url("/local").is_err());
    }
}
