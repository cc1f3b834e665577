"""The process's open-file limit: raised at start, and the share of it SIP TCP may use.

With the common soft limit of 1,024 descriptors, a thousand idle TCP connections used to stop
accept() everywhere, the admin API and the panel included, silently (issue 17, item 5). At start
the soft limit is raised to the hard limit (``raise_open_file_limit``, logged by the server), and
SIP TCP connections may use the limit less a reserve (``tcp_connection_budget``) kept for the
admin API, the panel, the store, UDP and RTP sockets.
"""

from __future__ import annotations

import resource

# Never fewer than this many descriptors are left to everything but SIP TCP connections.
MIN_RESERVE = 128


def raise_open_file_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: ``(before, after, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return soft, soft, hard  # e.g. a container refusing it: keep what we have
        return soft, want, hard
    return soft, soft, hard


def tcp_connection_budget(configured: int, soft_limit: int | None = None) -> int:
    """How many SIP TCP connections may be open: ``configured``, but never so many that the
    reserve (a quarter of the limit, at least ``MIN_RESERVE``) is eaten into."""
    if soft_limit is None:
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    reserve = max(MIN_RESERVE, soft_limit // 4)
    return max(1, min(configured, soft_limit - reserve))
