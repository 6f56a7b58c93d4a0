//! `[egress]`: the private and loopback addresses buyer URLs may reach, as the config file writes
//! them (`allow_private = ["127.0.0.1:9701", "10.1.0.0/16"]`).
//!
//! This module owns the section's shape and the check of each entry's syntax. Which addresses are
//! private, and the rule that refuses them unless an entry allows them, are
//! [`crate::buyers::egress`]'s.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::ConfigError;

/// Most entries of `egress.allow_private`: each target is compared with every entry.
pub const MAX_EGRESS_ALLOW: usize = 256;

/// Where buyer URLs may point besides public addresses.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Targets buyer URLs may reach although they are loopback, private, link-local or Gavel's
    /// own: `ip:port` (`"127.0.0.1:9701"`, `"[::1]:9701"`) allows one socket (and is the only
    /// way to allow one of Gavel's own listeners, such as the sandbox fleet's), `ip` or
    /// `ip/prefix` (`"10.0.0.0/8"`, `"fd00::/8"`) every port of a network. Empty: buyers reach
    /// public addresses only.
    pub allow_private: Vec<String>,
}

/// One parsed entry of `egress.allow_private`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowEntry {
    /// One address and port.
    Socket(SocketAddr),
    /// Every address of a network, every port: `ip/prefix` (a bare `ip` is its host route).
    Net { ip: IpAddr, prefix: u8 },
}

impl AllowEntry {
    /// Parses `ip:port`, `[ipv6]:port`, `ip` or `ip/prefix`. A network whose address has bits
    /// set past its prefix (`127.0.0.1/8`) is refused: it says something other than it allows.
    pub fn parse(text: &str) -> Result<AllowEntry, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{text:?}: port 0 is no port a buyer listens on"));
            }
            return Ok(AllowEntry::Socket(addr));
        }
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| {
            format!("{text:?} is not ip:port, ip or ip/prefix (e.g. \"127.0.0.1:9701\", \"10.0.0.0/8\")")
        })?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0..={width}"))?,
        };
        if mask(ip, prefix) != ip {
            return Err(format!(
                "{text:?}: the address has bits set past /{prefix}; write the network's first \
                 address ({}/{prefix})",
                mask(ip, prefix)
            ));
        }
        Ok(AllowEntry::Net { ip, prefix })
    }

    /// Whether this entry allows `target`.
    pub fn covers(&self, target: SocketAddr) -> bool {
        match *self {
            AllowEntry::Socket(addr) => {
                addr.port() == target.port() && canonical(addr.ip()) == canonical(target.ip())
            }
            AllowEntry::Net { .. } => self.covers_ip(target.ip()),
        }
    }

    /// Whether this entry names exactly `target` (an `ip:port` entry, not a network).
    pub fn names(&self, target: SocketAddr) -> bool {
        matches!(self, AllowEntry::Socket(_)) && self.covers(target)
    }

    fn covers_ip(&self, target: IpAddr) -> bool {
        match *self {
            AllowEntry::Socket(addr) => canonical(addr.ip()) == canonical(target),
            AllowEntry::Net { ip, prefix } => {
                let target = canonical(target);
                ip.is_ipv4() == target.is_ipv4() && mask(target, prefix) == ip
            }
        }
    }
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) written as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

impl EgressConfig {
    /// The entries, parsed; [`EgressConfig::validate`] has refused a file with a bad one, so one
    /// that does not parse here (a config built in code) is left out, allowing nothing.
    pub fn entries(&self) -> Vec<AllowEntry> {
        self.allow_private
            .iter()
            .filter_map(|e| AllowEntry::parse(e).ok())
            .collect()
    }

    /// Checks every entry's syntax and their number; errors name `egress.allow_private[i]`.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason,
        };
        if self.allow_private.len() > MAX_EGRESS_ALLOW {
            return Err(bad(
                "egress.allow_private".into(),
                format!("at most {MAX_EGRESS_ALLOW} entries"),
            ));
        }
        for (i, e) in self.allow_private.iter().enumerate() {
            AllowEntry::parse(e)
                .map_err(|reason| bad(format!("egress.allow_private[{i}]"), reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_and_cover_what_they_say() {
        let one = AllowEntry::parse("127.0.0.1:9701").unwrap();
        assert!(one.covers(at("127.0.0.1:9701")));
        assert!(one.names(at("127.0.0.1:9701")));
        assert!(
            one.covers(at("[::ffff:127.0.0.1]:9701")),
            "IPv4-mapped is the same address"
        );
        assert!(!one.covers(at("127.0.0.1:9702")));
        let net = AllowEntry::parse("10.0.0.0/8").unwrap();
        assert!(net.covers(at("10.9.8.7:1")) && !net.covers(at("11.0.0.1:1")));
        assert!(!net.names(at("10.9.8.7:1")), "a network names no socket");
        let v6 = AllowEntry::parse("fd00::/8").unwrap();
        assert!(v6.covers(at("[fd12::1]:80")) && !v6.covers(at("[fe80::1]:80")));
        let host = AllowEntry::parse("::1").unwrap();
        assert_eq!(
            host,
            AllowEntry::Net {
                ip: "::1".parse().unwrap(),
                prefix: 128
            }
        );
        assert!(host.covers(at("[::1]:8")));
        let all = AllowEntry::parse("0.0.0.0/0").unwrap();
        assert!(all.covers(at("127.0.0.1:1")) && !all.covers(at("[::1]:1")));
        assert!(AllowEntry::parse("[::1]:9701")
            .unwrap()
            .covers(at("[::1]:9701")));
        for bad in [
            "127.0.0.1/8",
            "10.0.0.0/33",
            "localhost:9701",
            "127.0.0.1:0",
            "",
            "1.2.3.4/x",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_entry_is_named_by_its_index() {
        let c = EgressConfig {
            allow_private: vec!["127.0.0.0/8".into(), "localhost".into()],
        };
        let e = c.validate("f.toml").unwrap_err().to_string();
        assert!(e.contains("egress.allow_private[1]"), "{e}");
        assert_eq!(c.entries().len(), 1);
    }
}
