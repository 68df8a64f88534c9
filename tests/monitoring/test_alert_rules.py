"""The alert rules and dashboards, checked offline: promtool accepts the rules, their unit tests
pass, and every metric they name is one the edge or the projector exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest

from compose.processes import free_port
from compose.prometheus import RULES, local_prometheus
from compose.settings import StackSettings
from ingest.metrics import EdgeMetrics
from projector.metrics import ProjectorMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES_TESTS = RULES.with_name("alerts_test.yml")
DASHBOARDS = ROOT / "compose" / "grafana" / "dashboards"
# Dashboards are evaluated by Grafana, which substitutes this first.
RATE_INTERVAL = "1m"


def promtool() -> str:
    found = shutil.which("promtool")
    # Never a skip: `make test-only` installs it through `make tools`.
    assert found is not None, "promtool is missing: run `make tools` (Debian's prometheus)"
    return found


def promql_of_dashboards() -> list[tuple[str, str]]:
    """(dashboard/panel title, expression) of every Prometheus target."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in orjson.loads(path.read_bytes())["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    found.append((f"{path.stem}/{panel['title']}", target["expr"]))
    return found


def exported_sample_names() -> set[str]:
    """Every sample name the two services can export, children created or not."""
    names = {"up"}  # added by Prometheus to every target
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for registry in (EdgeMetrics().registry, ProjectorMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (ours and the standard collectors')."""
    return set(re.findall(r"\b(?:(?:tracker|process|python)_\w+|up)\b", expr))


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TESTS.name],
        cwd=RULES_TESTS.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_test_cases() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"^\s*alertname: (\w+)", RULES_TESTS.read_text(), re.MULTILINE))
    assert alerts, "no alert found in alerts.yml"
    assert alerts - tested == set(), "alerts without a case in alerts_test.yml"


def test_every_metric_the_alerts_and_dashboards_name_is_exported() -> None:
    exported = exported_sample_names()
    rules = RULES.read_text()
    exprs = [
        ("alerts.yml", m)
        for m in re.findall(r"expr: (?:>-\n)?((?:.+\n?)+?)\s+(?:for|labels):", rules)
    ]
    exprs += promql_of_dashboards()
    assert len(exprs) > 20, exprs
    unknown = {
        (where, name)
        for where, expr in exprs
        for name in metric_names(expr)
        if name not in exported and not name.startswith(("process_", "python_"))
    }
    assert unknown == set()


def test_the_dashboards_promql_parses(tmp_path: Path) -> None:
    # promtool has no query checker; a recording rule per expression is parsed the same way.
    records = [
        {"record": f"dashboard:expr_{i}", "expr": expr.replace("$__rate_interval", RATE_INTERVAL)}
        for i, (_, expr) in enumerate(promql_of_dashboards())
    ]
    rules = tmp_path / "dashboards.rules.yml"
    rules.write_bytes(orjson.dumps({"groups": [{"name": "dashboards", "rules": records}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.stem)
def test_dashboard_panels_use_the_provisioned_datasources(path: Path) -> None:
    dashboard = orjson.loads(path.read_bytes())
    uids = {"prometheus": "prometheus", "grafana-clickhouse-datasource": "clickhouse"}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            kind = target["datasource"]["type"]
            assert target["datasource"]["uid"] == uids[kind], panel["title"]
            if kind == "grafana-clickhouse-datasource":
                assert target["editorType"] == "sql" and target["rawSql"].strip(), panel["title"]


def test_the_local_stack_has_no_prometheus_unless_asked(tmp_path: Path) -> None:
    settings = StackSettings.from_env({"TRACKER_DATA_DIR": str(tmp_path)})
    assert local_prometheus(settings, {}) == []
    assert local_prometheus(settings, {"TRACKER_LOCAL_PROMETHEUS": "0"}) == []


def test_the_local_prometheus_starts_and_loads_the_alerts(tmp_path: Path) -> None:
    port = free_port()
    settings = StackSettings.from_env(
        {"TRACKER_DATA_DIR": str(tmp_path), "TRACKER_EDGE_PORT": "18080"}
    )
    environ = {"TRACKER_LOCAL_PROMETHEUS": "1", "TRACKER_PROMETHEUS_PORT": str(port)}
    [prometheus] = local_prometheus(settings, environ)
    config = orjson.loads((tmp_path / "prometheus" / "prometheus.yml").read_bytes())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["edge", "projector"]
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:18080"]}]
    prometheus.start(tmp_path / "logs")
    try:
        prometheus.wait_healthy()
        url = f"http://127.0.0.1:{port}/api/v1/rules"
        with urllib.request.urlopen(url, timeout=5) as response:
            groups = orjson.loads(response.read())["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert loaded == set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    finally:
        prometheus.stop()
