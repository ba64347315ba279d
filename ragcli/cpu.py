"""What this process may use of the machine's CPUs: every stage that sizes a thread pool asks here."""

from __future__ import annotations

import os


def usable_cores(limit: int) -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count), at most limit."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(count, limit))
