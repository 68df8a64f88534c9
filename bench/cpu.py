"""CPU seconds of the measured processes: what an A/B on a shared machine can compare.

Wall-clock events/s swings with whatever else the 2 cores run; the CPU a process spent per
event does much less. The projector's comes from wait4 when it exits (its children
included), the long-lived servers' (ClickHouse, the broker) from /proc before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads), in seconds; 0.0 once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
