"""The node's own operating-system limits."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# With an unlimited hard limit, Linux still refuses a soft limit above fs.nr_open
# (1,048,576 by default): ask for that much.
_UNLIMITED_TARGET = 1 << 20

FEW_OPEN_FILES = 4096
"""Below this many open files a node holds fewer connections than a small site needs."""


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the limit.

    Every WebSocket is a file descriptor, and many systems start a process with a soft
    limit of 1,024: that, not memory, would then cap a node near a thousand
    connections. The hard limit is usually far higher, and any process may raise its
    soft limit up to it (as the Go runtime and nginx's ``worker_rlimit_nofile`` do).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, error)
        else:
            log.info("open files limit raised from %d to %d", soft, target)
            soft = target
    if soft != resource.RLIM_INFINITY and soft < FEW_OPEN_FILES:
        log.warning(
            "only %d open files allowed (ulimit -n): this node can hold fewer than %d "
            "connections; raise the hard limit (LimitNOFILE= in a systemd unit, "
            "ulimits in compose)",
            soft,
            soft,
        )
    return soft
