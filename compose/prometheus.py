"""An optional Prometheus for the local stack: scrapes the edge and the projector and evaluates
the alert rules of compose/prometheus/alerts.yml, so a developer sees them fire locally.

Off by default (`make run PROMETHEUS=1` or TRACKER_LOCAL_PROMETHEUS=1 turns it on); it uses
Debian's `prometheus` binary (`make tools` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from compose.processes import Service, StartError, http_check
from compose.settings import StackSettings
from schemas.environ import Environ

RULES = Path(__file__).resolve().parent / "prometheus" / "alerts.yml"


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    enabled: bool
    port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrometheusSettings:
        env = Environ(os.environ if environ is None else environ)
        return cls(
            enabled=env.flag("TRACKER_LOCAL_PROMETHEUS", False),
            port=env.port("TRACKER_PROMETHEUS_PORT", 9090),
        )


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise StartError("prometheus is not installed: run `make tools` (Debian's package)")
    return found


def write_config(
    path: Path,
    targets: Mapping[str, str],
    *,
    rules: Sequence[Path] = (RULES,),
    interval_s: float = 5.0,
) -> Path:
    """A scrape configuration: one job per ``targets`` entry (job name -> host:port, whose
    /metrics is scraped), evaluating ``rules``.

    Written as JSON, which is YAML too: no YAML library needed. The job names are the ones
    the alert rules and dashboards select on (``job="edge"``, ``job="projector"``).
    """
    interval = f"{int(interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rule.resolve()) for rule in rules],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path


def argv(config: Path, data: Path, host: str, port: int) -> list[str]:
    return [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={host}:{port}",
        # Debian's default looks for console templates under /etc; none are used here.
        "--web.console.templates=",
        "--web.console.libraries=",
    ]


def local_prometheus(
    settings: StackSettings, environ: Mapping[str, str] | None = None
) -> list[Service]:
    """The Prometheus service when TRACKER_LOCAL_PROMETHEUS is set, else nothing."""
    own = PrometheusSettings.from_env(environ)
    if not own.enabled:
        return []
    root = settings.data_dir.resolve() / "prometheus"
    host = settings.host
    config = write_config(
        root / "prometheus.yml",
        {
            "edge": f"{host}:{settings.edge_port}",
            "projector": f"{host}:{settings.projector_port}",
        },
    )
    return [
        Service(
            name="prometheus",
            argv=argv(config, root / "data", host, own.port),
            cwd=root,
            health=http_check(f"http://{host}:{own.port}/-/ready"),
            endpoint=f"http://{host}:{own.port}/alerts",
        )
    ]
