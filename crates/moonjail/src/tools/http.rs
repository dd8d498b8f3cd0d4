//! The built-in `http` tool: `http.get(url [, headers])` and `http.post(url, body [,
//! headers])` to allowlisted destinations only.
//!
//! Every hop (the first request and each redirect) is checked the same way before any
//! byte is sent: the scheme is `http` or `https`; host and port are on the allowlist; the
//! host name is resolved once, here, and each address must be public unless that address
//! itself is allowlisted (so `localhost`, or a name an attacker points at 10.0.0.1 or
//! 169.254.169.254, cannot reach the host's own network); the connection then goes to
//! exactly the checked addresses (ureq gets them through a pinned resolver, so there is
//! no second lookup for DNS rebinding to answer differently). The response body is read
//! up to a cap; connect and total timeouts are bounded by the run's deadline.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};
use ureq::http::{self, Uri};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use url::{Host, Url};

use super::{tool_error, ToolContext, ToolError};
use crate::error::ConfigError;

/// Configuration of the built-in `http` tool: where it may go and how much it may do.
///
/// ```
/// use moonjail::HttpConfig;
/// let http = HttpConfig::new()
///     .allow("api.example.com")          // ports 80 and 443
///     .allow("127.0.0.1:8080")           // this address and port only
///     .max_body_bytes(256 << 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    allow: Vec<String>,
    max_body_bytes: u64,
    max_requests: Option<u32>,
    max_redirects: u32,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    root_certificates: Option<Vec<Vec<u8>>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow: Vec::new(),
            max_body_bytes: 1 << 20,
            max_requests: Some(100),
            max_redirects: 5,
            connect_timeout: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(30)),
            root_certificates: None,
        }
    }
}

impl HttpConfig {
    /// A configuration with the defaults and an empty allowlist.
    pub fn new() -> HttpConfig {
        HttpConfig::default()
    }

    /// Allows `HOST[:PORT]`: a name (`api.example.com`, matched exactly, case-insensitive),
    /// an IPv4 address or an IPv6 address in brackets (`[::1]:8080`). Without a port, 80
    /// and 443. An address entry also lets an allowlisted name resolve to that address.
    /// Checked when the sandbox is built. By default, nothing is allowed (and the tool is
    /// not installed).
    pub fn allow(mut self, destination: impl Into<String>) -> Self {
        self.allow.push(destination.into());
        self
    }

    /// The allowlist as given.
    pub fn allowed(&self) -> &[String] {
        &self.allow
    }

    /// True when at least one destination is allowed.
    pub fn is_enabled(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Sets the largest response body, in bytes; a larger one is a tool error. By
    /// default, 1 MiB.
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets how many requests (`http.get` and `http.post` calls together) one run may
    /// make. By default, 100.
    pub fn max_requests(mut self, requests: Option<u32>) -> Self {
        self.max_requests = requests;
        self
    }

    /// Sets how many redirects one request follows (each one checked like the first
    /// request). By default, 5.
    pub fn max_redirects(mut self, redirects: u32) -> Self {
        self.max_redirects = redirects;
        self
    }

    /// Sets the connect timeout (always shortened to the run's remaining time). By
    /// default, 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the total time one request may take, redirects and body included (always
    /// shortened to the run's remaining time). By default, 30 s.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes https trust exactly these root certificates (DER), e.g. a private CA,
    /// instead of the bundled Mozilla roots. Certificates are always verified. By
    /// default, the Mozilla roots (webpki-roots, compiled in: no system store is read).
    pub fn root_certificates_der(mut self, certificates: Vec<Vec<u8>>) -> Self {
        self.root_certificates = Some(certificates);
        self
    }

    /// The per-run request quota, for the `http` namespace.
    pub(crate) fn request_quota(&self) -> Option<u32> {
        self.max_requests
    }
}

/// One allowlist entry: a host and the ports allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDestination {
    host: Host<String>,
    ports: Vec<u16>,
}

impl HttpDestination {
    fn matches(&self, host: &Host<String>, port: u16) -> bool {
        self.host == *host && self.ports.contains(&port)
    }
}

impl fmt::Display for HttpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Ipv6(a) => format!("[{a}]"),
            h => h.to_string(),
        };
        match self.ports.as_slice() {
            [p] => write!(f, "{host}:{p}"),
            _ => write!(f, "{host}"),
        }
    }
}

impl FromStr for HttpDestination {
    type Err = String;

    /// Parses `HOST[:PORT]` (see [`HttpConfig::allow`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty destination".into());
        }
        if s.contains(['/', '@', '?', '#', ' ']) || s.contains("://") {
            return Err(format!(
                "{s:?} is not HOST[:PORT] (give no scheme, path or credentials)"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing `]`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: expected `:PORT` after `]`"))?,
                ),
            };
            (format!("[{inside}]"), port)
        } else {
            match s.matches(':').count() {
                0 => (s.to_string(), None),
                1 => {
                    let (h, p) = s.split_once(':').unwrap_or((s, ""));
                    (h.to_string(), Some(p))
                }
                _ => {
                    return Err(format!(
                        "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:8080"
                    ))
                }
            }
        };
        let host = Host::parse(&host).map_err(|e| format!("{s:?}: invalid host: {e}"))?;
        let ports = match port {
            None => vec![80, 443],
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => vec![p],
                _ => return Err(format!("{s:?}: invalid port {p:?}")),
            },
        };
        Ok(HttpDestination { host, ports })
    }
}

/// The `http` tool, configured and checked.
pub(crate) struct Client {
    allow: Vec<HttpDestination>,
    /// Addresses allowlisted as such (with their ports): the only special addresses a
    /// request may reach.
    allowed_addrs: BTreeSet<(IpAddr, u16)>,
    config: HttpConfig,
    tls: ureq::tls::TlsConfig,
}

const METHOD_GET: &str = "GET";
const METHOD_POST: &str = "POST";

impl Client {
    pub(crate) fn new(config: HttpConfig) -> Result<Client, ConfigError> {
        if config.allow.is_empty() {
            return Err(tool_error(
                "http",
                "the allowlist is empty: allow at least one HOST[:PORT]",
            ));
        }
        let mut allow = Vec::new();
        let mut allowed_addrs = BTreeSet::new();
        for entry in &config.allow {
            let d: HttpDestination = entry.parse().map_err(|e| tool_error("http", e))?;
            let ip = match &d.host {
                Host::Ipv4(a) => Some(IpAddr::V4(*a)),
                Host::Ipv6(a) => Some(IpAddr::V6(*a)),
                Host::Domain(_) => None,
            };
            if let Some(ip) = ip {
                allowed_addrs.extend(d.ports.iter().map(|p| (ip, *p)));
            }
            allow.push(d);
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(roots) = &config.root_certificates {
            let roots = roots
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned());
            tls = tls.root_certs(ureq::tls::RootCerts::from(roots));
        }
        Ok(Client {
            allow,
            allowed_addrs,
            tls: tls.build(),
            config,
        })
    }

    /// `http.get(url [, headers])`.
    pub(crate) fn get(&self, ctx: &ToolContext, args: Vec<Json>) -> Result<Json, ToolError> {
        if args.len() > 2 {
            return Err(ToolError::new(
                "http.get(url [, headers]) takes at most 2 arguments",
            ));
        }
        let mut args = args.into_iter();
        let url = url_arg(args.next())?;
        let headers = headers_arg(args.next(), 2)?;
        self.request(ctx, METHOD_GET, &url, headers, None)
    }

    /// `http.post(url, body [, headers])`: a string body is sent as is; any other JSON
    /// value (a table) is sent as JSON text with `Content-Type: application/json` unless
    /// the headers say otherwise.
    pub(crate) fn post(&self, ctx: &ToolContext, args: Vec<Json>) -> Result<Json, ToolError> {
        if args.len() > 3 {
            return Err(ToolError::new(
                "http.post(url, body [, headers]) takes at most 3 arguments",
            ));
        }
        let mut args = args.into_iter();
        let url = url_arg(args.next())?;
        let body = args.next();
        let mut headers = headers_arg(args.next(), 3)?;
        let body = match body {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::String(s)) => s.into_bytes(),
            Some(other) => {
                if !headers.iter().any(|(k, _)| k == "content-type") {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                serde_json::to_vec(&other).map_err(|e| ToolError::new(e.to_string()))?
            }
        };
        self.request(ctx, METHOD_POST, &url, headers, Some(body))
    }

    fn request(
        &self,
        ctx: &ToolContext,
        method: &str,
        url: &str,
        mut headers: Vec<(String, String)>,
        mut body: Option<Vec<u8>>,
    ) -> Result<Json, ToolError> {
        let start = Instant::now();
        let deadline = match (self.config.timeout, ctx.deadline()) {
            (Some(t), Some(d)) => Some(d.min(start + t)),
            (Some(t), None) => Some(start + t),
            (None, d) => d,
        };
        let mut url = Url::parse(url).map_err(|e| ToolError::new(format!("invalid URL: {e}")))?;
        let mut method = method;
        for hop in 0..=self.config.max_redirects {
            let (host, port) = self.check_url(&url)?;
            let addrs = self.addresses(&host, port, deadline)?;
            let response = self.send(&url, method, &headers, body.as_deref(), addrs, deadline);
            let response = response.map_err(|e| self.transport_error(e, start))?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match (status, location) {
                (301 | 302 | 303 | 307 | 308, Some(location)) => {
                    if hop == self.config.max_redirects {
                        return Err(ToolError::new(format!(
                            "too many redirects (at most {})",
                            self.config.max_redirects
                        )));
                    }
                    let next = url.join(&location).map_err(|e| {
                        ToolError::new(format!("invalid redirect location {location:?}: {e}"))
                    })?;
                    if !matches!(status, 307 | 308) {
                        // As browsers do: a redirected POST becomes a GET without a body.
                        if method == METHOD_POST {
                            method = METHOD_GET;
                            body = None;
                            headers.retain(|(k, _)| k != "content-type");
                        }
                    }
                    if next.origin() != url.origin() {
                        // Credentials meant for one origin never travel to another.
                        headers.retain(|(k, _)| !matches!(k.as_str(), "authorization" | "cookie"));
                    }
                    url = next;
                }
                _ => return self.read(response, &url, start),
            }
        }
        Err(ToolError::new("too many redirects"))
    }

    /// Scheme, host and port of `url` against the allowlist.
    fn check_url(&self, url: &Url) -> Result<(Host<String>, u16), ToolError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ToolError::new(format!(
                "only http and https URLs are allowed, not {}:",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ToolError::new(
                "URLs with credentials are not allowed (send an Authorization header)",
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| ToolError::new("the URL has no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| ToolError::new("the URL has no port"))?;
        if !self.allow.iter().any(|d| d.matches(&host, port)) {
            let shown = match &host {
                Host::Ipv6(a) => format!("[{a}]:{port}"),
                h => format!("{h}:{port}"),
            };
            let allowed: Vec<String> = self.allow.iter().map(|d| d.to_string()).collect();
            return Err(ToolError::new(format!(
                "{shown} is not an allowed destination (allowed: {})",
                allowed.join(", ")
            )));
        }
        Ok((host, port))
    }

    /// The addresses to connect to: resolved once, each one public or allowlisted.
    fn addresses(
        &self,
        host: &Host<String>,
        port: u16,
        deadline: Option<Instant>,
    ) -> Result<Vec<SocketAddr>, ToolError> {
        let resolved = match host {
            Host::Ipv4(a) => vec![SocketAddr::new(IpAddr::V4(*a), port)],
            Host::Ipv6(a) => vec![SocketAddr::new(IpAddr::V6(*a), port)],
            Host::Domain(name) => resolve(name, port, deadline)?,
        };
        let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
            .into_iter()
            .partition(|a| !is_special(a.ip()) || self.allowed_addrs.contains(&(a.ip(), port)));
        if ok.is_empty() {
            let shown: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(ToolError::new(match host {
                Host::Domain(name) => format!(
                    "{name} resolves to {}: a loopback, private or otherwise special \
                     address, which is not allowed unless the address itself is on the \
                     allowlist",
                    shown.join(", ")
                ),
                _ => format!(
                    "{} is a loopback, private or otherwise special address",
                    shown.join(", ")
                ),
            }));
        }
        Ok(ok)
    }

    fn send(
        &self,
        url: &Url,
        method: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        addrs: Vec<SocketAddr>,
        deadline: Option<Instant>,
    ) -> Result<http::Response<ureq::Body>, ureq::Error> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(ureq::Error::Timeout(ureq::Timeout::Global));
        }
        let connect = Some(left.map_or(self.config.connect_timeout, |l| {
            l.min(self.config.connect_timeout)
        }));
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("moonjail/", env!("CARGO_PKG_VERSION")))
            .tls_config(self.tls.clone())
            .timeout_global(left)
            .timeout_connect(connect)
            .max_idle_connections(0)
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), Pinned(addrs));
        let mut req = http::Request::builder().method(method).uri(url.as_str());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match body {
            Some(body) => agent.run(req.body(body.to_vec()).map_err(ureq::Error::from)?),
            None => agent.run(req.body(()).map_err(ureq::Error::from)?),
        }
    }

    fn read(
        &self,
        response: http::Response<ureq::Body>,
        url: &Url,
        start: Instant,
    ) -> Result<Json, ToolError> {
        let status = response.status().as_u16();
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Json::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_string(), Json::String(value));
                }
            }
        }
        let max = self.config.max_body_bytes;
        let too_large = || {
            ToolError::new(format!(
                "the response body is larger than the {max} byte limit"
            ))
        };
        // ureq's limit fails a body of exactly the limit (it errs on the read after the
        // last byte): read one byte more and check here.
        let bytes = response
            .into_body()
            .into_with_config()
            .limit(max.saturating_add(1))
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => too_large(),
                e => self.transport_error(e, start),
            })?;
        if bytes.len() as u64 > max {
            return Err(too_large());
        }
        let body = String::from_utf8(bytes).map_err(|e| {
            ToolError::new(format!(
                "the response body is not valid UTF-8 (invalid byte at offset {}): binary \
                 responses are not supported",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Ok(serde_json::json!({
            "status": status,
            "headers": headers,
            "body": body,
            "url": url.as_str(),
        }))
    }

    fn transport_error(&self, e: ureq::Error, start: Instant) -> ToolError {
        match e {
            ureq::Error::Timeout(_) => ToolError::new(format!(
                "the request timed out after {} ms",
                start.elapsed().as_millis()
            )),
            ureq::Error::Io(e) => ToolError::new(format!("the request failed: {e}")),
            e => ToolError::new(format!("the request failed: {e}")),
        }
    }
}

/// Resolves `name` within the time left, on a helper thread (the system resolver cannot
/// be interrupted; a late answer is dropped).
fn resolve(name: &str, port: u16, deadline: Option<Instant>) -> Result<Vec<SocketAddr>, ToolError> {
    let target = (name.to_string(), port);
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("moonjail-dns".into())
        .spawn(move || {
            let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(|e| ToolError::new(format!("cannot resolve {name}: {e}")))?;
    let answer = match deadline {
        Some(d) => rx
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .map_err(|_| ToolError::new(format!("resolving {name} timed out"))),
        None => rx
            .recv()
            .map_err(|_| ToolError::new(format!("cannot resolve {name}"))),
    }?;
    let addrs = answer.map_err(|e| ToolError::new(format!("cannot resolve {name}: {e}")))?;
    if addrs.is_empty() {
        return Err(ToolError::new(format!("{name} has no address")));
    }
    Ok(addrs)
}

/// Hands ureq exactly the addresses that were checked.
#[derive(Debug)]
struct Pinned(Vec<SocketAddr>);

impl Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        // ureq keeps at most 16 addresses (its `MAX_ADDRS`); pushing more would panic.
        for a in self.0.iter().take(16) {
            out.push(*a);
        }
        Ok(out)
    }
}

fn url_arg(v: Option<Json>) -> Result<String, ToolError> {
    match v {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(ToolError::new(format!(
            "argument 1 (url) must be a string, not {}",
            json_type(&other)
        ))),
        None => Err(ToolError::new("argument 1 (url) is missing")),
    }
}

/// Request headers a script may not set: they belong to the connection, not to it.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "proxy-connection",
];

fn headers_arg(v: Option<Json>, position: usize) -> Result<Vec<(String, String)>, ToolError> {
    let map = match v {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Object(map)) => map,
        Some(other) => {
            return Err(ToolError::new(format!(
                "argument {position} (headers) must be a table of name = value, not {}",
                json_type(&other)
            )))
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let value = match value {
            Json::String(s) => s,
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            other => {
                return Err(ToolError::new(format!(
                    "header {name:?}: the value must be a string, not {}",
                    json_type(&other)
                )))
            }
        };
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ToolError::new(format!("{name:?} is not a valid header name")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) || parsed.as_str().starts_with("proxy-") {
            return Err(ToolError::new(format!(
                "the {name:?} header cannot be set by a script"
            )));
        }
        http::HeaderValue::from_str(&value)
            .map_err(|_| ToolError::new(format!("header {name:?}: invalid value")))?;
        out.push((parsed.as_str().to_string(), value));
    }
    Ok(out)
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "nil",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "a table",
    }
}

/// True for an address a request must not reach unless it is allowlisted by address:
/// unspecified, loopback, private, shared (CGNAT), link-local, multicast, broadcast,
/// documentation, benchmarking and reserved ranges, IPv6 unique-local, site-local and
/// link-local, and IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
/// 6to4, Teredo), whose real destination the check could not see.
pub(crate) fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_special_v4(a),
        IpAddr::V6(a) => is_special_v6(a),
    }
}

fn is_special_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, b2, _] = a.octets();
    b0 == 0                                      // "this network", 0.0.0.0
        || b0 == 10                              // private
        || (b0 == 100 && (64..128).contains(&b1)) // shared address space (CGNAT)
        || b0 == 127                             // loopback
        || (b0 == 169 && b1 == 254)              // link-local (cloud metadata)
        || (b0 == 172 && (16..32).contains(&b1)) // private
        || (b0 == 192 && b1 == 0 && b2 == 0)     // IETF protocol assignments
        || (b0 == 192 && b1 == 0 && b2 == 2)     // documentation
        || (b0 == 192 && b1 == 88 && b2 == 99)   // 6to4 relay anycast
        || (b0 == 192 && b1 == 168)              // private
        || (b0 == 198 && (18..20).contains(&b1)) // benchmarking
        || (b0 == 198 && b1 == 51 && b2 == 100)  // documentation
        || (b0 == 203 && b1 == 0 && b2 == 113)   // documentation
        || b0 >= 224 // multicast, reserved, broadcast
}

fn is_special_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    a.is_unspecified()
        || a.is_loopback()
        || (s[0..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)) // IPv4-mapped, -compatible
        || (s[0] == 0x64 && s[1] == 0xff9b)                       // NAT64
        || s[0] == 0x2002                                         // 6to4
        || (s[0] == 0x2001 && s[1] == 0)                          // Teredo
        || (s[0] == 0x2001 && s[1] == 0x0db8)                     // documentation
        || (s[0] & 0xfe00) == 0xfc00                              // unique local
        || (s[0] & 0xffc0) == 0xfe80                              // link-local
        || (s[0] & 0xffc0) == 0xfec0                              // site-local
        || (s[0] & 0xff00) == 0xff00 // multicast
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses() {
        for special in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:0:4136:e378::",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(
                is_special(special.parse().unwrap()),
                "{special} not special"
            );
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4007::64",
        ] {
            assert!(!is_special(public.parse().unwrap()), "{public} special");
        }
    }

    #[test]
    fn destinations() {
        let d: HttpDestination = "API.Example.com".parse().unwrap();
        assert_eq!(d.host, Host::Domain("api.example.com".to_string()));
        assert_eq!(d.ports, vec![80, 443]);
        let d: HttpDestination = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(d.host, Host::<String>::Ipv4(Ipv4Addr::LOCALHOST));
        assert_eq!(d.ports, vec![8080]);
        assert_eq!(d.to_string(), "127.0.0.1:8080");
        let d: HttpDestination = "[::1]:9".parse().unwrap();
        assert_eq!(d.host, Host::<String>::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(d.to_string(), "[::1]:9");
        for bad in [
            "",
            "http://a.com",
            "a.com/x",
            "u@a.com",
            "a.com:0",
            "a.com:99999",
            "a.com:x",
            "::1",
            "[::1",
            "[::1]x",
        ] {
            assert!(bad.parse::<HttpDestination>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls_against_the_allowlist() {
        let c = Client::new(
            HttpConfig::new()
                .allow("api.example.com")
                .allow("127.0.0.1:8080"),
        )
        .unwrap();
        let ok = |u: &str| c.check_url(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com:80/x"));
        assert!(ok("http://127.0.0.1:8080/"));
        // WHATWG parsing normalises other spellings of the same address.
        assert!(ok("http://2130706433:8080/"));
        assert!(!ok("http://api.example.com:8080/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(!ok("http://other.example.com/"));
        assert!(!ok("ftp://api.example.com/"));
        assert!(!ok("http://user:pw@api.example.com/"));
        assert!(!ok("file:///etc/passwd"));
    }
}
