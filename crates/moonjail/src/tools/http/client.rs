//! The `http` tool's client: resolution, address checks, pinned connections, ureq and
//! rustls (see the parent module for the rules it applies).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Map, Value as Json};
use ureq::http::{self, Uri};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use url::{Host, Url};

use super::super::{tool_error, ToolContext, ToolError};
use super::{HttpConfig, HttpDestination};
use crate::error::ConfigError;

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
            if let Some(ip) = d.address() {
                allowed_addrs.extend(d.ports().iter().map(|p| (ip, *p)));
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

    /// The allowlist as a model should read it: `api.example.com (ports 80, 443), ...`.
    pub(crate) fn allowed_summary(&self) -> String {
        let shown: Vec<String> = self
            .allow
            .iter()
            .map(|d| match d.ports() {
                [_] => d.to_string(),
                ports => {
                    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                    format!("{d} (ports {})", ports.join(", "))
                }
            })
            .collect();
        shown.join(", ")
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
    pub(super) fn check_url(&self, url: &Url) -> Result<(Host<String>, u16), ToolError> {
        super::check_url(&self.allow, url).map_err(ToolError::new)
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
