//! What the resolver threads take from the system's own resolver configuration:
//! `/etc/resolv.conf` (nameservers, whether a search list applies, `ndots`) and the names
//! `/etc/hosts` answers.
//!
//! Both files are read once per process, on the first resolver thread that needs them (never on a
//! core); a change to them needs a restart, as it does for many resolvers. The parsers are plain
//! functions over the text so they are tested without touching the files. What the resolver does
//! with a name is not here (see the parent module).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use crate::config::dns::DNS_PORT;

/// The system's resolver settings that Gavel's own lookups follow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct System {
    /// The `nameserver` lines, in order (an address with a zone index, `fe80::1%eth0`, is left
    /// out: it cannot be written as a `SocketAddr` here).
    pub nameservers: Vec<SocketAddr>,
    /// `Some(ndots)` when a `search` or `domain` line gives a search list: a relative name is
    /// then not only itself, and the system resolver (which walks the list) decides.
    pub search_ndots: Option<usize>,
    /// Every name `/etc/hosts` maps, lower case, without a trailing dot.
    pub hosts: HashSet<String>,
}

/// The system's settings, read from the files on first use.
pub(super) fn get() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let read = |path: &str| {
            // Only resolver threads get here (the first lookup that needs the files), never a core.
            #[allow(
                clippy::disallowed_methods,
                reason = "read once on a resolver thread, never on a core"
            )]
            let text = std::fs::read_to_string(path);
            text.unwrap_or_else(|e| {
                tracing::debug!(path, error = %e, "cannot read; taken as empty");
                String::new()
            })
        };
        let mut system = parse_resolv_conf(&read("/etc/resolv.conf"));
        system.hosts = parse_hosts(&read("/etc/hosts"));
        system
    })
}

/// `nameserver`, `search` / `domain` and `options ndots:N` of a resolv.conf.
pub(super) fn parse_resolv_conf(text: &str) -> System {
    let mut s = System::default();
    let mut search = false;
    let mut ndots = 1;
    for line in text.lines() {
        let mut words = line
            .split(['#', ';'])
            .next()
            .unwrap_or("")
            .split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    s.nameservers.push(SocketAddr::new(ip, DNS_PORT));
                }
            }
            // The last of `search` and `domain` wins, as in glibc; an empty one clears it.
            Some("search") | Some("domain") => search = words.next().is_some(),
            Some("options") => {
                for o in words {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        // glibc caps ndots at 15.
                        ndots = std::cmp::min(n, 15);
                    }
                }
            }
            _ => {}
        }
    }
    s.search_ndots = search.then_some(ndots);
    s
}

/// The names (canonical and aliases) of a hosts file.
pub(super) fn parse_hosts(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split('#').next()?.split_whitespace();
            words.next()?.parse::<IpAddr>().ok()?;
            Some(words.map(normal).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// A host name as the hosts set keeps it: lower case, no trailing dot.
pub(super) fn normal(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_nameservers_and_the_search_rule() {
        let s = parse_resolv_conf(
            "# generated\nnameserver 10.0.0.2\nnameserver ::1 ; local\nnameserver fe80::1%eth0\n\
             nameserver not-an-ip\noptions edns0 ndots:5\n",
        );
        assert_eq!(
            s.nameservers,
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(s.search_ndots, None);
        let s = parse_resolv_conf(
            "nameserver 10.0.0.2\nsearch ns.svc.cluster.local svc.cluster.local\noptions ndots:5",
        );
        assert_eq!(s.search_ndots, Some(5));
        assert_eq!(
            parse_resolv_conf("domain example.com").search_ndots,
            Some(1)
        );
        assert!(parse_resolv_conf("").nameservers.is_empty());
    }

    #[test]
    fn hosts_names_every_alias_in_lower_case() {
        let h = parse_hosts(
            "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback # comment\n\
             10.1.2.3 Buyer.Internal buyer. \n# 10.9.9.9 commented.out\nbogus line\n",
        );
        for n in [
            "localhost",
            "ip6-localhost",
            "ip6-loopback",
            "buyer.internal",
            "buyer",
        ] {
            assert!(h.contains(n), "{n}: {h:?}");
        }
        assert!(!h.contains("commented.out"));
        assert!(!h.contains("line"));
    }
}
