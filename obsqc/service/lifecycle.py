"""Processes that die with their parent: workers' horses with their worker, and the API and workers of
``obsqc up`` with ``obsqc up`` itself, so that no orphan keeps a port, a socket or a queue slot after its
parent was killed outright (``kill -9``, an OOM kill, a closed terminal).

Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing is set and the functions say so.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["PARENT_ENV", "die_with_parent", "follow_parent_from_env"]

PARENT_ENV: str = "OBSQC_PARENT_PID"
"""Set by ``obsqc up`` in the environment of the API and worker processes it starts: its own pid. Those
processes then ask for SIGTERM when it dies (:func:`follow_parent_from_env`). Not a user setting."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, *, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies. Returns whether it is set.

    Exits at once (status 1) when the parent is already gone: the parent changed since ``expected_parent``
    (or since this call began), so the request came too late to ever fire.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid() if expected_parent is None else expected_parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True


def follow_parent_from_env() -> bool:
    """In a process started by ``obsqc up``: SIGTERM (a graceful stop: workers finish their job) when
    ``obsqc up`` dies. A no-op without :data:`PARENT_ENV`; returns whether it is set."""
    value = os.environ.get(PARENT_ENV, "")
    if not value.isdigit():
        return False
    return die_with_parent(signal.SIGTERM, expected_parent=int(value))
