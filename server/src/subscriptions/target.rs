//! Where webhooks may go (PROTOCOL.md §6.2, §12.8: SSRF). A target is an
//! `https://` URL to a public address; `http://` and loopback only with
//! `--webhook-allow-loopback` (development: `localhost`, `127.0.0.x`, `::1`);
//! private, link-local, shared, multicast and unspecified addresses never —
//! unless the host is on `--webhook-allow-host`, which then also becomes the
//! only hosts allowed. Host names are checked again when they are resolved
//! for each delivery ([`Resolver`]), so a name that later points inside
//! the network is refused too (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// The webhook target rules (`--webhook-allow-host`,
/// `--webhook-allow-loopback`).
///
/// ```
/// use durable_session_server::subscriptions::target::TargetPolicy;
/// let dev = TargetPolicy { allow_hosts: vec![], allow_loopback: true };
/// assert!(dev.check("http://127.0.0.1:8080/hook").is_ok());
/// assert!(dev.check("http://10.0.0.1/hook").is_err());
/// assert!(TargetPolicy::default().check("http://127.0.0.1/hook").is_err());
/// assert!(TargetPolicy::default().check("https://worker.example/hook").is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// If not empty, the only hosts webhooks may go to (exact names or IP
    /// literals, case-insensitive); these are trusted wherever they are.
    pub allow_hosts: Vec<String>,
    /// Development: `http://` and `https://` to `localhost`, `127.0.0.x` and
    /// `::1`.
    pub allow_loopback: bool,
}

impl TargetPolicy {
    fn allow_listed(&self, host: &str) -> bool {
        self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether an address may be reached for a host that is not on the
    /// allowlist.
    fn address_allowed(&self, ip: IpAddr) -> bool {
        if is_dev_loopback(ip) {
            return self.allow_loopback;
        }
        is_public(ip)
    }

    /// Checks a webhook URL; the reason if it is refused.
    pub fn check(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("webhook URLs must not carry credentials".into());
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => HostKind::Name(d.to_ascii_lowercase()),
            Some(url::Host::Ipv4(ip)) => HostKind::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => HostKind::Ip(IpAddr::V6(ip)),
            None => return Err("webhook URL has no host".into()),
        };
        let host_text = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let listed = self.allow_listed(&host_text);
        if !self.allow_hosts.is_empty() && !listed {
            return Err(format!("{host_text} is not on the webhook host allowlist"));
        }
        let loopback = match &host {
            HostKind::Name(name) => name == "localhost",
            HostKind::Ip(ip) => is_dev_loopback(*ip),
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback && (self.allow_loopback || listed) => {}
            "http" => return Err("webhook URLs must use https:// (http:// only to loopback in development)".into()),
            other => return Err(format!("unsupported scheme {other}")),
        }
        if !listed {
            match host {
                HostKind::Name(name) if name == "localhost" && !self.allow_loopback => {
                    return Err("loopback webhook targets need --webhook-allow-loopback".into());
                }
                HostKind::Ip(ip) if !self.address_allowed(ip) => {
                    return Err(format!("{ip} is not a public address"));
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

enum HostKind {
    Name(String),
    Ip(IpAddr),
}

/// `127.0.0.x` and `::1`: the development exception.
fn is_dev_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [127, 0, 0],
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    }
}

/// Whether `ip` is a globally reachable unicast address: not loopback,
/// private (RFC 1918, fc00::/7), link-local (cloud metadata included),
/// shared (100.64/10), multicast, broadcast, documentation or unspecified.
///
/// ```
/// use durable_session_server::subscriptions::target::is_public;
/// assert!(is_public("93.184.216.34".parse().unwrap()));
/// for ip in ["10.1.2.3", "192.168.0.1", "169.254.169.254", "127.0.0.1", "::1", "fd00::1", "::ffff:10.0.0.1"] {
///     assert!(!is_public(ip.parse().unwrap()), "{ip}");
/// }
/// ```
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local
                    || (first & 0xffc0) == 0xfe80 // link-local
                    || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
            }
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space
        || o[0] >= 240)
}

/// The DNS resolver of webhook deliveries: resolves with the system's
/// resolver and keeps only the addresses [`TargetPolicy`] allows for the
/// name — so a name that resolves inside the network is not reached.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub policy: Arc<TargetPolicy>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let listed = policy.allow_listed(&host);
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| listed || policy.address_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address webhooks may reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
