"""wrk, the load tool, with report.lua: unique ids, p99.9, optional pacing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from bench.services import ROOT


def run(
    url: str, connections: int, seconds: int, pin: str | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One wrk run against ``url`` (on core ``pin`` if given): report.lua's summary + rps."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-s", str(ROOT / "bench" / "report.lua"), url]  # fmt: skip
    if pin:
        command = ["taskset", "-c", pin, *command]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    match = re.search(r"^JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data: dict[str, Any] = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data
