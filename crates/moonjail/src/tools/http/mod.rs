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

//!
//! This module is the configuration (always compiled: an allowlist is checked when a
//! sandbox is built); `client.rs`, the part that speaks HTTP and TLS, only with the
//! `http` feature.

#[cfg(feature = "http")]
mod client;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use url::Host;

#[cfg(feature = "http")]
pub(crate) use client::Client;

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
    /// every subdomain of a name (`*.example.com`: one or more labels before
    /// `example.com`, not `example.com` itself), an IPv4 address or an IPv6 address in
    /// brackets (`[::1]:8080`). Without a port, 80 and 443. An address entry also lets an
    /// allowlisted name resolve to that address; a name, wildcard or not, must resolve to
    /// public addresses. Checked when the sandbox is built: `*`, `*.com` and a `*` other
    /// than a whole first label are refused. By default, nothing is allowed (and the tool
    /// is not installed).
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

/// One allowlist entry: a host (or every subdomain of a domain) and the ports allowed on
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDestination {
    host: HostPattern,
    ports: Vec<u16>,
}

/// The host part of an allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This name or address, exactly.
    Exact(Host<String>),
    /// `*.SUFFIX`: any name with one or more labels before `SUFFIX` (normalised as URL
    /// hosts are, so it compares with them as text), never `SUFFIX` itself.
    Subdomains(String),
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl HttpDestination {
    /// True when a request to `host:port` may go here (before any address check: a
    /// name's addresses are checked after resolution, whatever entry it matched).
    /// Shared with the linter, which checks URLs a script spells out.
    pub(crate) fn matches(&self, host: &Host<String>, port: u16) -> bool {
        self.ports.contains(&port) && self.matches_host(host)
    }

    /// True when `host` is this entry's host, or one of its subdomains for a `*.` entry.
    pub(crate) fn matches_host(&self, host: &Host<String>) -> bool {
        match (&self.host, host) {
            (HostPattern::Exact(h), host) => h == host,
            (HostPattern::Subdomains(suffix), Host::Domain(name)) => name
                .strip_suffix(suffix.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            (HostPattern::Subdomains(_), _) => false,
        }
    }

    /// The address this entry names, if it names one (an address entry also lets an
    /// allowlisted name resolve to it).
    pub(crate) fn address(&self) -> Option<std::net::IpAddr> {
        match &self.host {
            HostPattern::Exact(Host::Ipv4(a)) => Some(std::net::IpAddr::V4(*a)),
            HostPattern::Exact(Host::Ipv6(a)) => Some(std::net::IpAddr::V6(*a)),
            _ => None,
        }
    }

    /// The ports allowed.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }
}

impl fmt::Display for HttpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Exact(Host::Ipv6(a)) => format!("[{a}]"),
            HostPattern::Exact(h) => h.to_string(),
            HostPattern::Subdomains(suffix) => format!("*.{suffix}"),
        };
        match self.ports.as_slice() {
            [p] => write!(f, "{host}:{p}"),
            _ => write!(f, "{host}"),
        }
    }
}

/// Parses the host of an entry: a name or address, or `*.DOMAIN`.
fn host_pattern(s: &str, host: &str) -> Result<HostPattern, String> {
    if !host.contains('*') {
        let host = Host::parse(host).map_err(|e| format!("{s:?}: invalid host: {e}"))?;
        return Ok(HostPattern::Exact(host));
    }
    if host == "*" {
        return Err(format!(
            "{s:?}: `*` would allow every host on the internet; list the hosts, or the \
             subdomains of one domain as `*.example.com`"
        ));
    }
    let suffix = host
        .strip_prefix("*.")
        .filter(|rest| !rest.contains('*'))
        .ok_or_else(|| {
            format!(
                "{s:?}: `*` may only be the whole first label, as in `*.example.com` (any \
                 subdomain of example.com)"
            )
        })?;
    match Host::parse(suffix) {
        Ok(Host::Domain(d)) if d.trim_end_matches('.').contains('.') => {
            Ok(HostPattern::Subdomains(d))
        }
        Ok(Host::Domain(_)) => Err(format!(
            "{s:?}: a wildcard needs a domain of at least two labels after `*.` (`*.com` \
             would allow a whole top-level domain)"
        )),
        Ok(_) => Err(format!(
            "{s:?}: a wildcard stands for subdomains of a name, not of an address"
        )),
        Err(e) => Err(format!("{s:?}: invalid host: {e}")),
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
        let host = host_pattern(s, &host)?;
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

/// Scheme, credentials, host and port of `url` against the allowlist `allow`: the host and
/// port, or why the request is refused. The client checks every hop with this; the linter
/// checks the URLs a script spells out.
pub(crate) fn check_url(
    allow: &[HttpDestination],
    url: &url::Url,
) -> Result<(Host<String>, u16), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs are allowed, not {}:",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials are not allowed (send an Authorization header)".into());
    }
    let host = url.host().ok_or("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    if !allow.iter().any(|d| d.matches(&host, port)) {
        let shown = match &host {
            Host::Ipv6(a) => format!("[{a}]:{port}"),
            h => format!("{h}:{port}"),
        };
        let allowed: Vec<String> = allow.iter().map(|d| d.to_string()).collect();
        return Err(format!(
            "{shown} is not an allowed destination (allowed: {})",
            allowed.join(", ")
        ));
    }
    Ok((host, port))
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use url::Url;

    use super::client::{is_special, Client};
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
        assert_eq!(
            d.host,
            HostPattern::Exact(Host::Domain("api.example.com".to_string()))
        );
        assert_eq!(d.ports, vec![80, 443]);
        let d: HttpDestination = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(d.host, HostPattern::Exact(Host::Ipv4(Ipv4Addr::LOCALHOST)));
        assert_eq!(d.ports, vec![8080]);
        assert_eq!(d.to_string(), "127.0.0.1:8080");
        let d: HttpDestination = "[::1]:9".parse().unwrap();
        assert_eq!(d.host, HostPattern::Exact(Host::Ipv6(Ipv6Addr::LOCALHOST)));
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
    fn wildcards() {
        let d: HttpDestination = "*.Example.com".parse().unwrap();
        assert_eq!(d.host, HostPattern::Subdomains("example.com".into()));
        assert_eq!(d.to_string(), "*.example.com");
        let d: HttpDestination = "*.example.com:8443".parse().unwrap();
        assert_eq!(d.ports, vec![8443]);
        let host = |h: &str| Host::Domain(h.to_string());
        assert!(d.matches(&host("api.example.com"), 8443));
        assert!(d.matches(&host("a.b.example.com"), 8443));
        assert!(!d.matches(&host("example.com"), 8443));
        assert!(!d.matches(&host("badexample.com"), 8443));
        assert!(!d.matches(&host("api.example.com.evil.net"), 8443));
        assert!(!d.matches(&host("api.example.com"), 443));
        assert!(!d.matches(&Host::Ipv4(Ipv4Addr::LOCALHOST), 8443));
        for (bad, why) in [
            ("*", "every host"),
            ("*:443", "every host"),
            ("*.com", "two labels"),
            ("*.localhost", "two labels"),
            ("a.*.example.com", "whole first label"),
            ("*a.example.com", "whole first label"),
            ("*.*.example.com", "whole first label"),
            ("**.example.com", "whole first label"),
            ("*.", "invalid host"),
            ("*.127.0.0.1", "not of an address"),
        ] {
            let e = bad.parse::<HttpDestination>().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
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
