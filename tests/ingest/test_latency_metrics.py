"""The edge's request-duration histogram: right buckets, Prometheus' cumulative form, and
one observation per request of each endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers import Edge
from ingest.latency import LatencyHistogram


def samples(text: str, name: str) -> dict[tuple[str, str], float]:
    """``{(sample name, le or endpoint): value}`` of one histogram family."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                key = s.labels.get("le", "") + "/" + s.labels.get("endpoint", "")
                out[(s.name, key)] = s.value
    return out


def test_observations_fall_in_the_first_bucket_at_or_above_them() -> None:
    registry = CollectorRegistry()
    h = LatencyHistogram(
        "t_seconds", "test", label="endpoint", values=("a", "b"), buckets=(0.1, 1.0),
        registry=registry,
    )  # fmt: skip
    for seconds in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.labels("a").observe(seconds)
    got = samples(generate_latest(registry).decode(), "t_seconds")
    # le is inclusive (Prometheus): 0.1 is in le=0.1, 1.0 in le=1.0.
    assert got[("t_seconds_bucket", "0.1/a")] == 2
    assert got[("t_seconds_bucket", "1.0/a")] == 4
    assert got[("t_seconds_bucket", "+Inf/a")] == 5
    assert got[("t_seconds_count", "/a")] == 5
    assert abs(got[("t_seconds_sum", "/a")] - 8.65) < 1e-9
    # A label value never observed is exported with zeros, so dashboards have a series.
    assert got[("t_seconds_count", "/b")] == 0
    assert got[("t_seconds_bucket", "+Inf/b")] == 0


async def test_every_pixel_click_and_api_request_is_timed(edge: Edge) -> None:
    for i in range(7):
        async with edge.session.get(f"{edge.base}/sales.php?universe=demo&amount=1&id=m{i}") as r:
            assert r.status == 200
    async with edge.session.get(f"{edge.base}/click?u=demo", allow_redirects=False) as r:
        assert r.status == 400  # unsigned link: refused, and timed all the same
    async with edge.session.post(f"{edge.base}/v1/sales", data=b"{}") as r:
        assert r.status == 401
    async with edge.session.get(f"{edge.base}/metrics") as r:
        text = await r.text()
    got = samples(text, "tracker_edge_request_duration_seconds")
    name = "tracker_edge_request_duration_seconds_count"
    assert (got[(name, "/pixel")], got[(name, "/click")], got[(name, "/api")]) == (7, 1, 1)
    # A pixel call's handler takes microseconds, well under the last finite bucket.
    assert got[("tracker_edge_request_duration_seconds_bucket", "1.0/pixel")] == 7
