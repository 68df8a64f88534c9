"""The edge stage's interleaved rounds: the order of each round, a target's figures as medians
over its rounds, and ratios between two targets paired round by round.

A pair's two runs are seconds apart, so the machine's drift over minutes (10-30% on these
VMs) moves both alike and cancels in their ratio; medians keep one odd round from deciding.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# What wrk's summary gives per run (bench/report.lua): medians of these make a target's row.
FIGURES = ("rps", "p50", "p99", "p999", "mean")
# Counts: summed over the rounds (the row's requests are every request of its rounds).
COUNTS = ("requests", "errors", "non2xx", "duration_us")


def order(targets: tuple[str, ...], round_: int) -> tuple[str, ...]:
    """Forward on even rounds, reversed on odd: no target always runs first after a pause,
    and each one's neighbours swap sides."""
    return targets if round_ % 2 == 0 else targets[::-1]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's row from its rounds' wrk summaries: median figures, summed counts, and
    the rounds themselves (``per_round``) for the paired ratios."""
    row: dict[str, Any] = {key: sum(run[key] for run in runs) for key in COUNTS}
    row.update({key: statistics.median(run[key] for run in runs) for key in FIGURES})
    row["per_round"] = runs
    return row


def per_round(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A row's rounds; a row of an older report (one run, no rounds) is its own only round."""
    runs: list[dict[str, Any]] = row.get("per_round") or [row]
    return runs


@dataclass(frozen=True)
class Spread:
    """Per-round ratios: their median and their range."""

    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def __str__(self) -> str:
        if len(self.ratios) == 1:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} ({min(self.ratios):.2f}-{max(self.ratios):.2f})"


def paired(row: dict[str, Any], reference: dict[str, Any], figure: str) -> Spread:
    """``row``'s ``figure`` over ``reference``'s, round by round (the same round's runs)."""
    ours, theirs = per_round(row), per_round(reference)
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} rounds paired with {len(theirs)}")
    return Spread(tuple(a[figure] / max(b[figure], 1) for a, b in zip(ours, theirs, strict=True)))
