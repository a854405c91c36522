//! The outbound HTTP client, built for URLs that come from outside.
//!
//! Used to fetch provider keys. Every request: https (plain http only to a
//! loopback host), no redirects, no proxy (a system proxy would bypass the
//! address checks), connect and total timeouts, a response size cap read
//! incrementally, and for non-loopback hosts only public addresses: a name
//! that resolves to a private, loopback, link-local, shared or reserved
//! address is refused, and the connection goes to the address that was
//! checked (no second lookup to rebind).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("refused URL: {0}")]
    Url(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered {0} (only 200 is accepted; redirects are not followed)")]
    Status(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// The `Cache-Control` header, if any.
    pub cache_control: Option<String>,
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
}

impl Outbound {
    pub fn new(timeout: Duration) -> Result<Outbound, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .timeout(timeout)
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .user_agent(concat!("authmd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        Ok(Outbound { client })
    }

    /// GETs `url`, reading at most `max_bytes`.
    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<Fetched, FetchError> {
        let parsed = check(url)?;
        let mut response = self
            .client
            .get(parsed)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Transport(error_chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|l| l > max_bytes as u64)
        {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Transport(error_chain(&e)))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            cache_control,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Checks a URL before any connection: scheme, and for IP literals (which
/// skip name resolution) the address rule.
pub fn check(url: &str) -> Result<reqwest::Url, FetchError> {
    let u = reqwest::Url::parse(url).map_err(|e| FetchError::Url(format!("{url:?}: {e}")))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(FetchError::Url("user information in a URL".into()));
    }
    let loopback = crate::config::is_loopback_host(&u);
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(FetchError::Url(format!("{url:?}: https is required"))),
    }
    match u.host() {
        Some(url::Host::Ipv4(ip)) if !loopback && !is_public(IpAddr::V4(ip)) => {
            Err(FetchError::Url(format!("{ip} is not a public address")))
        }
        Some(url::Host::Ipv6(ip)) if !loopback && !is_public(IpAddr::V6(ip)) => {
            Err(FetchError::Url(format!("{ip} is not a public address")))
        }
        None => Err(FetchError::Url("no host".into())),
        _ => Ok(u),
    }
}

/// A resolver that keeps only public addresses, except for `localhost`,
/// which resolves to loopback only.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let localhost = host.eq_ignore_ascii_case("localhost");
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| {
                    if localhost {
                        a.ip().is_loopback()
                    } else {
                        is_public(a.ip())
                    }
                })
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Globally routable unicast: not private, loopback, link-local, shared
/// (CGNAT), documentation, benchmarking, multicast, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0064 && s[1] == 0xff9b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = bad.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(!is_public(ip), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            let ip: IpAddr = good.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(is_public(ip), "{good}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        assert!(check("https://provider.example/jwks").is_ok());
        assert!(check("http://127.0.0.1:9/jwks").is_ok());
        assert!(check("http://localhost:9/jwks").is_ok());
        for bad in [
            "http://provider.example/jwks",
            "ftp://provider.example/jwks",
            "https://169.254.169.254/latest",
            "https://10.0.0.1/jwks",
            "https://[fd00::1]/jwks",
            "https://user:pw@provider.example/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        // `localhost.` with a trailing dot is not the literal `localhost`:
        // it resolves to loopback, which is not public.
        let out = Outbound::new(Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"));
        let r = out.get("https://localhost.:9/jwks", 1024).await;
        assert!(matches!(r, Err(FetchError::Transport(_))), "{r:?}");
    }
}
