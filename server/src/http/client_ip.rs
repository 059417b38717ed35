//! The client's address behind trusted reverse proxies (`--trusted-proxy`).
//!
//! Behind a load balancer every connection comes from the balancer, so a
//! per-address limit would count all clients as one. When the peer is a
//! trusted proxy, the client is the rightmost address of `X-Forwarded-For`
//! that is not itself a trusted proxy: addresses to its left were written by
//! the client (or by proxies we do not know) and may be forged. Without a
//! trusted proxy the header is ignored: anyone can send it.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address to count a connection by: the peer's, or — when the peer is
/// in `trusted` — the client's as forwarded by the trusted proxies.
///
/// ```
/// use axum::http::HeaderMap;
/// use durable_session_server::http::client_ip::client_ip;
///
/// let trusted = ["10.0.0.0/8".parse().unwrap()];
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.3".parse().unwrap());
/// let lb = "10.0.0.2".parse().unwrap();
/// assert_eq!(client_ip(lb, &headers, &trusted), "203.0.113.7".parse::<std::net::IpAddr>().unwrap());
/// // From anyone else the header is ignored.
/// let direct = "198.51.100.1".parse().unwrap();
/// assert_eq!(client_ip(direct, &headers, &trusted), direct);
/// ```
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // Several headers are one list, in order.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return canonical(ip),
            // A hop we cannot read: nothing left of it can be trusted, and
            // the proxy that wrote it is the best address we have.
            Err(_) => break,
        }
    }
    peer
}

/// IPv4 addresses seen as IPv4-mapped IPv6 (`::ffff:a.b.c.d`) on a dual
/// stack listener count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_hop_across_several_headers() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let h = headers(&["6.6.6.6, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("203.0.113.9"),
            "a mapped IPv4 peer"
        );
    }

    #[test]
    fn no_header_only_proxies_or_garbage_leave_the_peer() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let peer = ip("127.0.0.2");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
        assert_eq!(client_ip(peer, &headers(&["127.0.0.9"]), &trusted), peer);
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4, not-an-ip"]), &trusted), peer);
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), &[]), peer, "nothing trusted");
    }
}
