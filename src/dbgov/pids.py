"""Whether a process still exists: for rows and files that name the pid that wrote them."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True unless no process has this pid (one we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
