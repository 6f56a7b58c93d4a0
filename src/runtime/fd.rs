//! The file-descriptor limit and the connection cap it allows: `RLIMIT_NOFILE` raised to its
//! hard limit, the reserve kept for the process (at most half the limit), connections per core,
//! and the refusal to start when too few fit.

use super::*;

/// File descriptors kept back from client connections for the rest of the process: stdio and
/// logging, the store's files, the webhook senders' sockets, the operations listener.
pub const FD_RESERVE_BASE: u64 = 128;

/// File descriptors kept back per core: its listener, its io_uring or epoll instance, wake-ups.
pub const FD_RESERVE_PER_CORE: u64 = 16;

/// File descriptors kept back per core and configured buyer: its outbound connections to that
/// buyer, in flight and pooled.
pub const FD_RESERVE_PER_BUYER_PER_CORE: u64 = 8;

/// Fewest client connections per core Gavel starts with: under a file-descriptor limit that
/// leaves fewer, two keep-alive clients could lock everyone else out, so it refuses to start and
/// says which limit would do.
pub const MIN_CONNECTIONS_PER_CORE: u64 = 16;

/// Raises the file-descriptor limit and returns the connections each core may hold under it
/// ([`connection_cap`]), logging how the cap was decided. Refuses (with the numbers and the
/// limit that would do) when the limit leaves fewer than [`MIN_CONNECTIONS_PER_CORE`] per core
/// where the config asks for more.
pub(super) fn connection_cap_for(config: &Config, cores: usize) -> Result<usize, String> {
    let fd_limit = raise_fd_limit();
    let buyers = config.buyers.len();
    let configured = config.server.max_connections_per_core;
    let cap = connection_cap(configured, fd_limit, cores, buyers);
    if let Some(limit) = fd_limit {
        let useful = configured.min(MIN_CONNECTIONS_PER_CORE as usize);
        if cap < useful {
            return Err(format!(
                "the file-descriptor limit {limit} leaves {cap} client connection(s) per core \
                 ({cores} cores, {buyers} buyers, {} kept for the process); at least \
                 {MIN_CONNECTIONS_PER_CORE} are needed: raise it to {} or more (ulimit -n, \
                 systemd LimitNOFILE)",
                fd_reserve(cores, buyers, fd_limit),
                fd_limit_needed(cores, buyers)
            ));
        }
    }
    match fd_limit {
        Some(limit) if cap < configured => tracing::info!(
            max_connections_per_core = cap,
            configured,
            fd_limit = limit,
            fd_reserve = fd_reserve(cores, buyers, fd_limit),
            cores,
            "connection cap lowered to fit the file-descriptor limit: (fd_limit - fd_reserve) / cores"
        ),
        Some(limit) => tracing::info!(
            max_connections_per_core = cap,
            fd_limit = limit,
            fd_reserve = fd_reserve(cores, buyers, fd_limit),
            cores,
            "connection cap as configured; the file-descriptor limit holds it"
        ),
        None => tracing::info!(
            max_connections_per_core = cap,
            "connection cap as configured; the file-descriptor limit is unknown or unlimited"
        ),
    }
    if cap < 64 {
        tracing::warn!(
            max_connections_per_core = cap,
            fd_limit_for_full_reserve = fd_limit_needed(cores, buyers),
            "few connections fit the file-descriptor limit; raise it (ulimit -n, LimitNOFILE)"
        );
    }
    Ok(cap)
}

/// The process's open-file limit (`RLIMIT_NOFILE`), after raising the soft limit to the hard
/// one where it is lower (nothing is lost: the hard limit is what the operator allowed). `None`
/// when it cannot be read or is unlimited.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max && lim.rlim_max != libc::RLIM_INFINITY {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim = raised;
            }
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        // `rlim_t` is `u64` on Linux but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// File descriptors kept back from client connections for `cores` cores and `buyers` buyers
/// under `fd_limit`: the sum of the per-process, per-core and per-buyer reserves, but never more
/// than half the limit. The reserve is generous (8 pooled sockets per buyer and core); under a
/// low limit, client connections get the other half rather than nothing.
pub fn fd_reserve(cores: usize, buyers: usize, fd_limit: Option<u64>) -> u64 {
    let full = FD_RESERVE_BASE
        + cores as u64 * (FD_RESERVE_PER_CORE + buyers as u64 * FD_RESERVE_PER_BUYER_PER_CORE);
    fd_limit.map_or(full, |limit| full.min(limit / 2))
}

/// Connections one core may hold: `configured`, or fewer when `fd_limit` minus
/// [`fd_reserve`], shared by `cores`, cannot hold that many; never below 1.
pub fn connection_cap(
    configured: usize,
    fd_limit: Option<u64>,
    cores: usize,
    buyers: usize,
) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let per_core = limit.saturating_sub(fd_reserve(cores, buyers, fd_limit)) / cores.max(1) as u64;
    configured
        .min(usize::try_from(per_core).unwrap_or(usize::MAX))
        .max(1)
}

/// The file-descriptor limit that gives each of `cores` cores [`MIN_CONNECTIONS_PER_CORE`]
/// connections beside the full reserve: what to tell an operator whose limit is too low.
pub fn fd_limit_needed(cores: usize, buyers: usize) -> u64 {
    fd_reserve(cores, buyers, None) + cores as u64 * MIN_CONNECTIONS_PER_CORE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_fits_the_fd_limit() {
        // 1024 fds, 2 cores, 1 buyer: (1024 - (128 + 2 * (16 + 8))) / 2 = 424.
        assert_eq!(connection_cap(10_000, Some(1024), 2, 1), 424);
        assert_eq!(connection_cap(100, Some(1024), 2, 1), 100);
        assert_eq!(connection_cap(10_000, None, 2, 1), 10_000);
        // Under a low limit the reserve shrinks to half of it: 256 fds, 2 cores, 6 buyers keep
        // 128 (not 128 + 2 * (16 + 48) = 256) and give each core 64.
        assert_eq!(fd_reserve(2, 6, Some(256)), 128);
        assert_eq!(connection_cap(10_000, Some(256), 2, 6), 64);
        assert_eq!(connection_cap(10_000, Some(64), 4, 10), 8);
        // A limit of nothing still lets each core hold one connection (start refuses it).
        assert_eq!(connection_cap(10_000, Some(0), 4, 10), 1);
        assert_eq!(fd_limit_needed(2, 6), 256 + 32);
    }
}
