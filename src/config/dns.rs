//! The `[dns]` section: where buyer host names are looked up and how long the answers are kept.
//!
//! This module owns the section's schema, its defaults and its range checks. It does not own the
//! lookups or the cache (`buyers::resolve` does), nor reading `/etc/resolv.conf` or the hosts
//! file: an empty `nameservers` list only says "use the system's", and the resolver threads read
//! those files themselves.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::ConfigError;

/// The longest any answer may be kept (`max_ttl_ms`, `negative_ttl_ms`, `fallback_ttl_ms`): a day.
pub const MAX_DNS_TTL_MS: u64 = 86_400_000;
/// The longest one nameserver may take to answer (`timeout_ms`).
pub const MAX_DNS_TIMEOUT_MS: u64 = 10_000;
/// The standard DNS port, used for a nameserver given without one.
pub const DNS_PORT: u16 = 53;
/// The largest `ndots` (glibc caps the resolv.conf option at the same number).
pub const MAX_NDOTS: usize = 15;
/// The hosts file read when `hosts_file` is not set.
pub const SYSTEM_HOSTS_FILE: &str = "/etc/hosts";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers asked in turn, as `ip` (port 53) or `ip:port` (`[v6]:port`), over UDP and, for
    /// an answer too long for UDP, TCP. Empty: `/etc/resolv.conf` (its nameservers, search list
    /// and `ndots`); when that names no nameserver either, only the hosts file and `localhost`
    /// resolve.
    pub nameservers: Vec<String>,
    /// Domains tried after a relative name, in order (resolv.conf's `search`). Only with
    /// `nameservers`: without them `/etc/resolv.conf`'s own list applies.
    pub search: Vec<String>,
    /// A relative name with at least this many dots is asked as written before the `search`
    /// domains are tried; one with fewer, after them (resolv.conf's `options ndots:`). Only with
    /// `nameservers`; unset: 1.
    pub ndots: Option<usize>,
    /// The hosts file: a name it lists is answered from it, never asked of a nameserver.
    pub hosts_file: String,
    /// How long one nameserver may take to answer a query before it is asked again or the next
    /// one is.
    pub timeout_ms: u64,
    /// An answer is kept at least this long, whatever its records' TTL says (a TTL of 0 would
    /// otherwise put a lookup in front of every auction).
    pub min_ttl_ms: u64,
    /// An answer is kept at most this long, whatever its records' TTL says, so a buyer that moves
    /// is found again within this time.
    pub max_ttl_ms: u64,
    /// How long a name that does not resolve is remembered when the nameserver's answer carries no
    /// SOA record to say so (with one, its negative TTL is used, between `min_ttl_ms` and
    /// `max_ttl_ms`); also how long a failed system lookup is remembered.
    pub negative_ttl_ms: u64,
    /// How long an answer from the hosts file is kept: it carries no TTL. (The name is older
    /// than the hosts file's use: the system resolver's answers, which had no TTL either, were
    /// kept this long.)
    pub fallback_ttl_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: None,
            hosts_file: SYSTEM_HOSTS_FILE.to_string(),
            timeout_ms: 500,
            min_ttl_ms: 1_000,
            max_ttl_ms: 300_000,
            negative_ttl_ms: 1_000,
            fallback_ttl_ms: 30_000,
        }
    }
}

/// `text` as a nameserver address: `ip:port`, `[v6]:port`, or a bare IP on port 53.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| format!("must be an IP address with an optional port, got {text:?}"))
}

/// Whether `text` reads as a domain name: dot-separated labels of 1 to 63 letters, digits, `-`
/// or `_`, a trailing dot allowed.
fn is_domain(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl DnsConfig {
    /// The configured nameservers' addresses (checked by [`DnsConfig::validate`]; one that does not
    /// parse is left out).
    pub fn nameserver_addrs(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter_map(|n| parse_nameserver(n).ok())
            .collect()
    }

    /// The section's range checks; `file` names the source in errors.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: format!("dns.{key}"),
            reason,
        };
        for (i, n) in self.nameservers.iter().enumerate() {
            parse_nameserver(n).map_err(|r| bad(&format!("nameservers[{i}]"), r))?;
        }
        // resolv.conf gives its own search list and ndots with its nameservers; mixing one
        // source's list with the other's servers would be a guess at what was meant.
        if self.nameservers.is_empty() && !self.search.is_empty() {
            return Err(bad(
                "search",
                "applies only with dns.nameservers (without them /etc/resolv.conf's search list does)"
                    .to_string(),
            ));
        }
        if self.nameservers.is_empty() && self.ndots.is_some() {
            return Err(bad(
                "ndots",
                "applies only with dns.nameservers (without them /etc/resolv.conf's ndots does)"
                    .to_string(),
            ));
        }
        for (i, d) in self.search.iter().enumerate() {
            if !is_domain(d) {
                return Err(bad(
                    &format!("search[{i}]"),
                    format!("must be a domain name (letters, digits, '-', '_', dots), got {d:?}"),
                ));
            }
        }
        if let Some(n) = self.ndots.filter(|n| *n > MAX_NDOTS) {
            return Err(bad("ndots", format!("must be 0..={MAX_NDOTS}, got {n}")));
        }
        if self.hosts_file.is_empty() {
            return Err(bad(
                "hosts_file",
                format!("must name a file (the system's is {SYSTEM_HOSTS_FILE})"),
            ));
        }
        if !(1..=MAX_DNS_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(bad(
                "timeout_ms",
                format!("must be 1..={MAX_DNS_TIMEOUT_MS}, got {}", self.timeout_ms),
            ));
        }
        for (key, ms) in [
            ("max_ttl_ms", self.max_ttl_ms),
            ("negative_ttl_ms", self.negative_ttl_ms),
            ("fallback_ttl_ms", self.fallback_ttl_ms),
        ] {
            if !(1..=MAX_DNS_TTL_MS).contains(&ms) {
                return Err(bad(key, format!("must be 1..={MAX_DNS_TTL_MS}, got {ms}")));
            }
        }
        if !(1..=self.max_ttl_ms).contains(&self.min_ttl_ms) {
            return Err(bad(
                "min_ttl_ms",
                format!(
                    "must be 1..=max_ttl_ms ({}), got {}",
                    self.max_ttl_ms, self.min_ttl_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_take_an_optional_port() {
        assert_eq!(
            parse_nameserver("10.0.0.2").unwrap(),
            "10.0.0.2:53".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_nameserver("::1").unwrap(),
            "[::1]:53".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_nameserver("ns1.example.com").is_err());
    }

    #[test]
    fn ranges_are_checked_and_named() {
        assert!(DnsConfig::default().validate("t.toml").is_ok());
        let key_of = |c: DnsConfig| match c.validate("t.toml") {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let d = DnsConfig::default;
        let cases = [
            (
                DnsConfig {
                    nameservers: vec!["127.0.0.1".into(), "dns.example".into()],
                    ..d()
                },
                "dns.nameservers[1]",
            ),
            (
                DnsConfig {
                    search: vec!["svc.local".into()],
                    ..d()
                },
                "dns.search",
            ),
            (
                DnsConfig {
                    ndots: Some(2),
                    ..d()
                },
                "dns.ndots",
            ),
            (
                DnsConfig {
                    nameservers: vec!["127.0.0.1".into()],
                    search: vec!["ok.example".into(), "bad domain".into()],
                    ..d()
                },
                "dns.search[1]",
            ),
            (
                DnsConfig {
                    nameservers: vec!["127.0.0.1".into()],
                    ndots: Some(MAX_NDOTS + 1),
                    ..d()
                },
                "dns.ndots",
            ),
            (
                DnsConfig {
                    hosts_file: String::new(),
                    ..d()
                },
                "dns.hosts_file",
            ),
            (
                DnsConfig {
                    timeout_ms: 0,
                    ..d()
                },
                "dns.timeout_ms",
            ),
            (
                DnsConfig {
                    min_ttl_ms: d().max_ttl_ms + 1,
                    ..d()
                },
                "dns.min_ttl_ms",
            ),
            (
                DnsConfig {
                    negative_ttl_ms: 0,
                    ..d()
                },
                "dns.negative_ttl_ms",
            ),
            (
                DnsConfig {
                    max_ttl_ms: MAX_DNS_TTL_MS + 1,
                    ..d()
                },
                "dns.max_ttl_ms",
            ),
        ];
        for (c, key) in cases {
            assert_eq!(key_of(c), key);
        }
    }
}
