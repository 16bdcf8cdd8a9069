//! What every HTTP face of `doorbell serve` shares: the headers of its pages,
//! the client's address (behind a local reverse proxy too), and the log of
//! refusals that names an abuser once a minute. A leaf: imports nothing of
//! the server.

use axum::http::{header, HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one address is named in a warning for one limit.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The headers of every page: no caching, no Referer, no sniffing, nothing
/// from other sites, no framing, forms only to ourselves.
pub fn secure_headers(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The room name is in the URL: never leak it in a Referer header.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
}

/// The client's address: the connection's peer or, when the peer is a
/// reverse proxy on this machine, the address that proxy appended to
/// `X-Forwarded-For` (without this, every client of a proxied server would be
/// one address to the per-address limits). From anyone else the header is
/// ignored: anybody can send it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !peer.is_loopback() {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

/// A device id that may stand in a URL path as it is (the ring link
/// `/watch/{device_id}`, and the page to go to after signing in): the
/// characters the doorbell allows in `signaling.device_id`, and `~`.
pub fn link_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':'))
}

/// Refusals of abusers, logged at warn level once a minute per address and
/// limit and at debug level in between: a flood must not flood the journal.
#[derive(Debug, Default)]
pub struct Refusals {
    warned: Mutex<HashMap<(IpAddr, &'static str), Instant>>,
}

impl Refusals {
    pub fn refused(&self, addr: IpAddr, limit: &'static str, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let due = warned
            .get(&(addr, limit))
            .is_none_or(|t| now.duration_since(*t) >= WARN_EVERY);
        if due {
            warned.insert((addr, limit), now);
            // Bounded: forget addresses that have been quiet for a while.
            if warned.len() > 10_000 {
                warned.retain(|_, t| now.duration_since(*t) < WARN_EVERY);
            }
            tracing::warn!(%addr, limit, "refused: {what} (further refusals of this address for this limit are logged at debug level for a minute)");
        } else {
            tracing::debug!(%addr, limit, "refused: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_url_safe_device_ids_make_links() {
        assert!(link_safe("door-1") && link_safe("kitchen-cam-001") && link_safe("site:door.2"));
        assert!(!link_safe("") && !link_safe("a/b") && !link_safe("a?b") && !link_safe("é"));
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_this_machine() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 198.51.100.7"),
        );
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(
            client_address(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "the proxy's own entry, the last"
        );
        assert_eq!(client_address(remote, &h), remote);
        assert_eq!(client_address(proxy, &HeaderMap::new()), proxy);
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_address(proxy, &h), proxy);
    }
}
