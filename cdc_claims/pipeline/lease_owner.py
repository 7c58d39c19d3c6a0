"""Who holds a unit's submit lease, and whether that holder is known to be dead.

A lease names its holder as ``<host>:<pid>``. A container restarted in its pod keeps the host
name, so a lease left by a process of this host that no longer runs is taken over at once
instead of being waited out; holders on other hosts are never judged (their lease expires).
"""

from __future__ import annotations

import os
import socket


def owner_id() -> str:
    """This process as a lease holder: the pod (host name) and the process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_dead(holder: str) -> bool:
    """True when ``holder`` (an :func:`owner_id`) was a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
