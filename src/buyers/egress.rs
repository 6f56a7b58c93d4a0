//! Where a buyer URL may point: the egress rule, checked on a URL when a buyer is defined (config
//! file or admin API) and on every address a connection is about to open (after name
//! resolution, in [`super::pool`]), so a name that resolves into the host is refused as surely
//! as a literal address.
//!
//! Refused: a URL with credentials (`user:pw@`) or an invalid port (0, above 65535); and an
//! address that is unspecified (`0.0.0.0`, `::`, `0.0.0.0/8`), loopback, link-local
//! (`169.254/16`, `fe80::/10`), a cloud metadata service (`169.254.169.254`, `fd00:ec2::254`),
//! private (RFC 1918 `10/8`, `172.16/12`, `192.168/16`, shared `100.64/10`, ULA `fc00::/7`),
//! multicast or broadcast, or one of Gavel's own listeners (the API, the operations listener,
//! the sandbox fleet) — unless `[egress] allow_private` allows it. A network entry allows the
//! private, loopback and link-local addresses it covers; only an `ip:port` entry allows one of
//! Gavel's own listeners (so allowing `127.0.0.0/8` for loopback buyers never opens the API or
//! `/metrics` to them). Without the rule a buyer URL is a port scanner aimed at the host and its
//! network: outcomes such as `http_405` or `connect_failed` tell open ports from closed ones.
//!
//! The same rule applies to buyers from the config file and from the API: "private targets must
//! be allowed explicitly", and the operator allows them in the file. This module owns the rule; it
//! does not parse the config section ([`crate::config::egress`]) nor connect (`pool` does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::egress::{canonical, AllowEntry};
use crate::config::{BuyerConfig, Config, ConfigError};

/// Why an address (or a URL) may not be a buyer's. Each is the caller's or the buyer's
/// configuration, never a fault of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The URL carries `user:password@`.
    Credentials,
    /// The URL's port is 0 or above 65535 (or not a number).
    InvalidPort,
    /// One of Gavel's own listeners.
    OwnListener,
    /// A cloud metadata service.
    Metadata,
    /// `0.0.0.0`, `::` (which reach the host itself).
    Unspecified,
    Loopback,
    LinkLocal,
    /// RFC 1918, shared address space (RFC 6598) or unique local (RFC 4193).
    Private,
    Multicast,
}

impl Refusal {
    /// A short phrase for messages: "is a loopback address".
    pub fn what(self) -> &'static str {
        match self {
            Refusal::Credentials => "carries credentials (user:password@)",
            Refusal::InvalidPort => "has an invalid port",
            Refusal::OwnListener => "is one of Gavel's own listeners",
            Refusal::Metadata => "is a cloud metadata service",
            Refusal::Unspecified => "is the unspecified address (the host itself)",
            Refusal::Loopback => "is a loopback address",
            Refusal::LinkLocal => "is a link-local address",
            Refusal::Private => "is a private address",
            Refusal::Multicast => "is a multicast or broadcast address",
        }
    }
}

/// An address a buyer call was about to connect to, and why it may not. The outcome's
/// `reject_reason` is `egress_refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{addr} {} and [egress] allow_private does not allow it", .why.what())]
pub struct Refused {
    pub addr: SocketAddr,
    pub why: Refusal,
}

/// The egress rule of one server: what `[egress] allow_private` allows, and Gavel's own
/// listening addresses. Immutable; each core's pool holds it by `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow: Vec<AllowEntry>,
    own: Vec<SocketAddr>,
}

// Architecture Invariant [egress]: a buyer call never connects into Gavel's host or network
// unless `[egress] allow_private` allows it; checked when defined and right before connecting.
impl Egress {
    /// The rule of `config`, with Gavel's own listeners: those the config names
    /// (`server.listen`, `metrics.listen`, `sandbox.listen`) and `bound`, the addresses the
    /// server actually listens on (which differ when the config asks for port 0).
    pub fn from_config(config: &Config, bound: &[SocketAddr]) -> Egress {
        let named = [
            Some(config.server.listen),
            config.metrics.listen,
            config.sandbox.listen,
        ];
        let own = named
            .into_iter()
            .flatten()
            .chain(bound.iter().copied())
            .filter(|a| a.port() != 0)
            .collect();
        Egress {
            allow: config.egress.entries(),
            own,
        }
    }

    /// Whether a buyer call may connect to `addr`.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), Refused> {
        let refused = |why| Err(Refused { addr, why });
        if addr.port() == 0 {
            return refused(Refusal::InvalidPort);
        }
        let ip = canonical(addr.ip());
        let class = class_of(ip);
        if self.own.iter().any(|own| is_own(*own, addr, class)) {
            // Only an entry naming this very socket opens one of Gavel's own listeners.
            if self.allow.iter().any(|e| e.names(addr)) {
                return Ok(());
            }
            return refused(Refusal::OwnListener);
        }
        match class {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|e| e.covers(addr)) => Ok(()),
            Some(why) => refused(why),
        }
    }

    /// Whether `url` may be a buyer's: no credentials, a valid port, and a host that, when it is
    /// an IP address, passes [`Egress::check_addr`]. A host name is checked when it resolves, at
    /// connect time. The reason is a sentence for the field's error.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let Some((_, rest)) = url.split_once("://") else {
            return Ok(()); // Not a URL the pool takes: its own check says why.
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!(
                "the URL {}; send a buyer's credentials as its auth_header instead",
                Refusal::Credentials.what()
            ));
        }
        let bad_port = || {
            format!(
                "the URL {}: ports are 1 to 65535",
                Refusal::InvalidPort.what()
            )
        };
        let (host, port) = split_host_port(authority).map_err(|_| bad_port())?;
        let default = if url.starts_with("https://") { 443 } else { 80 };
        let port = port.unwrap_or(default);
        if port == 0 {
            return Err(bad_port());
        }
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>();
        match literal {
            Ok(ip) => self.check_addr(SocketAddr::new(ip, port)).map_err(|e| {
                format!("{e}; list it under [egress] allow_private in the config file to allow it")
            }),
            Err(_) => Ok(()),
        }
    }

    /// [`Egress::check_url`] on a buyer's ping and post URLs; `Err` names the field.
    pub fn check_buyer(&self, b: &BuyerConfig) -> Result<(), (&'static str, String)> {
        for (field, url) in [("ping_url", &b.ping_url), ("post_url", &b.post_url)] {
            if !url.is_empty() {
                self.check_url(url).map_err(|reason| (field, reason))?;
            }
        }
        Ok(())
    }
}

/// Checks the config file's buyers against the egress rule it defines (Gavel's own listeners as
/// the file names them); errors name `file` and the key (`buyers[0].ping_url`).
pub fn check_config(config: &Config, file: &str) -> Result<(), ConfigError> {
    let egress = Egress::from_config(config, &[]);
    for (i, b) in config.buyers.iter().enumerate() {
        egress
            .check_buyer(b)
            .map_err(|(field, reason)| ConfigError::Invalid {
                file: file.to_string(),
                key: format!("buyers[{i}].{field}"),
                reason: format!("buyer {:?}: {reason}", b.id),
            })?;
    }
    Ok(())
}

/// The host and the port (when written) of a URL's authority without credentials; `Err` when
/// the port is not a number from 0 to 65535.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), ()> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']').ok_or(())?;
            let after = &rest[end + 1..];
            (&authority[..end + 2], after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    match port {
        None | Some("") => Ok((host, None)),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map(|p| (host, Some(p))).map_err(|_| ())
        }
        Some(_) => Err(()),
    }
}

/// Whether `target` reaches Gavel's listener `own`: the same socket, or (when `own` listens on
/// every address) the same port on an address of the host's own kind.
fn is_own(own: SocketAddr, target: SocketAddr, class: Option<Refusal>) -> bool {
    if own.port() != target.port() {
        return false;
    }
    let own_ip = canonical(own.ip());
    own_ip == canonical(target.ip()) || (own_ip.is_unspecified() && class.is_some())
}

/// Why `ip` is no public unicast address, or `None` when it is one.
fn class_of(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => class_of_v4(v4),
        IpAddr::V6(v6) => class_of_v6(v6),
    }
}

fn class_of_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some(Refusal::Metadata)
    } else if a == 0 {
        // 0.0.0.0/8, "this network": Linux connects 0.0.0.0 to the host itself.
        Some(Refusal::Unspecified)
    } else if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(Refusal::Private)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(Refusal::Multicast)
    } else {
        None
    }
}

fn class_of_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let first = ip.segments()[0];
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        Some(Refusal::Metadata)
    } else if ip.is_unspecified() {
        Some(Refusal::Unspecified)
    } else if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 {
        Some(Refusal::Private)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(allow: &[&str], own: &[&str]) -> Egress {
        Egress {
            allow: allow
                .iter()
                .map(|e| AllowEntry::parse(e).unwrap())
                .collect(),
            own: own.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn why(e: &Egress, addr: &str) -> Option<Refusal> {
        e.check_addr(addr.parse().unwrap()).err().map(|r| r.why)
    }

    #[test]
    fn addresses_into_the_host_and_its_network_are_refused_by_default() {
        let e = egress(&[], &["127.0.0.1:8080"]);
        for (addr, expected) in [
            ("169.254.169.254:80", Some(Refusal::Metadata)),
            ("[fd00:ec2::254]:80", Some(Refusal::Metadata)),
            ("0.0.0.0:80", Some(Refusal::Unspecified)),
            ("[::]:80", Some(Refusal::Unspecified)),
            ("127.0.0.1:8080", Some(Refusal::OwnListener)),
            ("127.0.0.2:9000", Some(Refusal::Loopback)),
            ("[::1]:9000", Some(Refusal::Loopback)),
            ("[::ffff:127.0.0.1]:9000", Some(Refusal::Loopback)),
            ("169.254.1.1:80", Some(Refusal::LinkLocal)),
            ("[fe80::1]:80", Some(Refusal::LinkLocal)),
            ("10.1.2.3:80", Some(Refusal::Private)),
            ("172.16.0.1:80", Some(Refusal::Private)),
            ("192.168.1.1:80", Some(Refusal::Private)),
            ("100.64.0.1:80", Some(Refusal::Private)),
            ("[fd12::1]:80", Some(Refusal::Private)),
            ("224.0.0.1:80", Some(Refusal::Multicast)),
            ("255.255.255.255:80", Some(Refusal::Multicast)),
            ("203.0.113.7:0", Some(Refusal::InvalidPort)),
            ("203.0.113.7:443", None),
            ("[2001:db8::1]:443", None),
            ("100.128.0.1:80", None),
        ] {
            assert_eq!(why(&e, addr), expected, "{addr}");
        }
    }

    #[test]
    fn allowed_targets_pass_but_own_listeners_need_their_own_entry() {
        let e = egress(
            &["127.0.0.0/8", "::1/128", "127.0.0.1:9701", "10.0.0.0/8"],
            &[
                "127.0.0.1:8080",
                "127.0.0.1:9464",
                "127.0.0.1:9701",
                "0.0.0.0:7000",
            ],
        );
        assert_eq!(why(&e, "127.0.0.5:1234"), None);
        assert_eq!(why(&e, "[::1]:1234"), None);
        assert_eq!(why(&e, "10.9.9.9:80"), None);
        assert_eq!(
            why(&e, "127.0.0.1:9701"),
            None,
            "named by its ip:port entry"
        );
        assert_eq!(why(&e, "127.0.0.1:8080"), Some(Refusal::OwnListener));
        assert_eq!(why(&e, "127.0.0.1:9464"), Some(Refusal::OwnListener));
        // A listener on every address is reached on the host's own kinds of address.
        assert_eq!(why(&e, "10.1.1.1:7000"), Some(Refusal::OwnListener));
        assert_eq!(why(&e, "203.0.113.7:7000"), None);
        assert_eq!(why(&e, "192.168.0.1:80"), Some(Refusal::Private));
        assert_eq!(why(&e, "169.254.169.254:80"), Some(Refusal::Metadata));
    }

    #[test]
    fn urls_with_credentials_bad_ports_or_refused_literals_are_refused() {
        let e = egress(&["127.0.0.0/8"], &["127.0.0.1:8080"]);
        let refused = |url: &str| e.check_url(url).err();
        for url in [
            "http://user:pw@buyer.example/ping",
            "http://buyer.example:99999/ping",
            "http://buyer.example:0/ping",
            "http://buyer.example:8o/ping",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0:9000/ping",
            "http://[::]:9000/ping",
            "http://127.0.0.1:8080/v1/ping",
            "https://10.0.0.1/ping",
            "http://[fe80::1]/ping",
        ] {
            assert!(refused(url).is_some(), "{url}");
        }
        for url in [
            "http://buyer.example/ping",
            "https://buyer.example:8443/ping?x=1",
            "http://127.0.0.1:9701/buyers/a/ping",
            "http://localhost:8080/ping", // a name: checked when it resolves
            "http://[2001:db8::1]:80/ping",
            "http://buyer.example:/ping",
        ] {
            assert_eq!(refused(url), None, "{url}");
        }
        let reason = refused("http://169.254.169.254/").unwrap();
        assert!(
            reason.contains("metadata") && reason.contains("allow_private"),
            "{reason}"
        );
    }
}
