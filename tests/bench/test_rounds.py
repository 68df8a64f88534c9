from typing import Any

import pytest

from bench import rounds


def run(rps: float, p99: int) -> dict[str, Any]:
    return {"requests": int(rps), "errors": 0, "non2xx": 0, "duration_us": 1_000_000,
            "rps": rps, "p50": p99 // 2, "p99": p99, "p999": p99 * 2, "mean": p99 / 3}  # fmt: skip


def test_rounds_alternate_forward_and_reversed() -> None:
    targets = ("nginx", "prebuilt", "baseline", "edge")
    assert [rounds.order(targets, i) for i in range(3)] == [targets, targets[::-1], targets]


def test_a_targets_row_holds_medians_of_its_rounds_and_sums_of_its_counts() -> None:
    row = rounds.summary([run(100, 900), run(300, 100), run(200, 500)])
    assert (row["rps"], row["p99"], row["p50"], row["p999"]) == (200, 500, 250, 1000)
    assert row["requests"] == 600 and row["duration_us"] == 3_000_000
    assert len(row["per_round"]) == 3


def test_paired_ratios_cancel_drift_that_moves_both_targets_alike() -> None:
    # The machine slows by half over the rounds: each target's median mixes fast and slow
    # rounds, while every round's ratio is the same.
    edge = rounds.summary([run(80, 1000), run(60, 1000), run(40, 1000)])
    baseline = rounds.summary([run(100, 1000), run(75, 1000), run(50, 1000)])
    ratio = rounds.paired(edge, baseline, "rps")
    assert ratio.ratios == pytest.approx((0.8, 0.8, 0.8))
    assert str(ratio) == "0.80 (0.80-0.80)"


def test_paired_ratios_show_their_median_and_range() -> None:
    edge = rounds.summary([run(90, 1200), run(80, 1000), run(70, 3000)])
    baseline = rounds.summary([run(100, 1000), run(100, 1000), run(100, 1000)])
    assert str(rounds.paired(edge, baseline, "rps")) == "0.80 (0.70-0.90)"
    assert rounds.paired(edge, baseline, "p99").median == pytest.approx(1.2)


def test_a_row_of_an_older_report_is_its_own_only_round() -> None:
    old = run(80, 1000) | {"target": "edge"}
    ratio = rounds.paired(old, run(100, 500), "p99")
    assert ratio.ratios == (2.0,) and str(ratio) == "2.00"


def test_rows_with_different_round_counts_are_not_paired() -> None:
    with pytest.raises(ValueError, match="rounds"):
        rounds.paired(rounds.summary([run(1, 1)] * 2), rounds.summary([run(1, 1)] * 3), "rps")
