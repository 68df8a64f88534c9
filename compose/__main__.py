"""`python -m compose run|up|down|status`: the local stack behind `make run/up/down/status`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from compose.processes import StartError
from compose.registry import register_demo
from compose.settings import StackSettings
from compose.stack import (
    Stack,
    applications,
    check_ports_free,
    infrastructure,
    shell_context,
    stack_edge_secrets,
)
from compose.supervisor import Supervisor
from schemas.context import context_file, write_context
from schemas.environ import ConfigError
from schemas.signing import Link, link_url

logger = logging.getLogger("compose")


def _state_path(settings: StackSettings) -> Path:
    return settings.data_dir / "run" / "stack.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(settings: StackSettings) -> dict[str, object] | None:
    path = _state_path(settings)
    if not path.exists():
        return None
    state: dict[str, object] = orjson.loads(path.read_bytes())
    pid = state.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        path.unlink(missing_ok=True)
        return None
    return state


def run(settings: StackSettings) -> int:
    """Start everything in the foreground, keep it running; stop everything on SIGINT/SIGTERM."""
    if _read_state(settings) is not None:
        print("the stack is already running (see `make status`; stop it with `make down`)")
        return 1
    services = infrastructure(settings) + applications(settings)
    check_ports_free(settings, services)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = Stack(services, settings.data_dir / "logs")
    stack.start()
    try:
        # With the services' own environment (broker, topic prefix): what they follow.
        projector = next(s for s in services if s.name == "projector")
        register_demo({**os.environ, **projector.env})
        # From now on a shell's commands (sign-link, universes, rebuild) talk to this stack.
        write_context(context_file(settings.data_dir), shell_context(settings, projector.env))
    except BaseException:
        stack.stop()
        raise
    state_path = _state_path(settings)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    external = {}
    if settings.external_kafka:
        external["kafka"] = f"{settings.external_kafka} (external)"
    if settings.external_clickhouse:
        external["clickhouse"] = f"{settings.external_clickhouse} (external)"

    def save(snapshot: dict[str, dict[str, object]]) -> None:
        state = {"pid": os.getpid(), "services": snapshot, "external": external}
        tmp = state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        os.replace(tmp, state_path)

    supervisor = Supervisor(stack, on_change=save)
    save(supervisor.snapshot())
    endpoints = {service.name: service.endpoint for service in services} | external
    _print_endpoints(endpoints, settings)
    try:
        while not stop.wait(0.5):
            supervisor.tick()
    finally:
        print("stopping (edge and projector drain first)...", flush=True)
        stack.stop()
        state_path.unlink(missing_ok=True)
        print("stopped", flush=True)
    return 0


def _print_endpoints(endpoints: dict[str, str], settings: StackSettings) -> None:
    print("\nthe tracker is running:")
    for name, endpoint in endpoints.items():
        print(f"  {name:<11} {endpoint}")
    print(f"  data        {settings.data_dir.resolve()}  (logs in logs/)")
    _print_try_it(settings)
    print("\nCtrl-C stops everything.", flush=True)


def _print_try_it(settings: StackSettings) -> None:
    """Calls to paste: a signed link, a sale attributed to its click, an API sale, a query."""
    edge = f"http://{settings.host}:{settings.edge_port}"
    data = settings.data_dir.resolve()
    secrets_ = stack_edge_secrets(data, os.environ)
    link = link_url(
        edge, secrets_["TRACKER_SECRET"],
        Link("demo", "alice", "spring", "hero", "https://shop.example/landing"),
    )  # fmt: skip
    universe, _, api_key = secrets_["TRACKER_API_KEYS"].split(",")[0].partition(":")
    key_source = (
        "TRACKER_API_KEYS of your environment"
        if "TRACKER_API_KEYS" in os.environ
        else f"the local stack's demo API key, TRACKER_API_KEYS in {context_file(data)}"
    )
    pixel = f"{edge}/sales.php?universe=demo&amount=12,50&id=t2&click=$click"
    sale = '{"amount":"5.00","id":"t3"}'
    print("\ntry:")
    print("  # a tracked link (`make sign-link` signs others): 302 to the landing page with")
    print("  # trk_click=<token> and the cookie trk_demo; keep the token as a landing page would")
    follow = f"curl -s -o /dev/null -w '%{{redirect_url}}' '{link}'"
    print(f"  click=$({follow} | sed 's/.*trk_click=//')")
    print("  # the sale pixel, attributed to that click (campaign spring, link hero, alice)")
    print(f"  curl -s -o /dev/null -w '%{{http_code}} %{{content_type}}\\n' \"{pixel}\"")
    print(f"  # a sale from the merchant's back end, with {key_source}")
    print(f"  # (universe {universe}; the key: {api_key})")
    print(f"  curl -s -H 'Authorization: Bearer {api_key}' -d '{sale}' {edge}/v1/sales")
    print("  # a second later, in ClickHouse")
    query = "SELECT+campaign_id,currency,purchases,turnover+FROM+tracker.campaign_turnover"
    print(f"  curl '{settings.clickhouse_url}/?query={query}+FORMAT+PrettyCompact'")
    print("  # the SQL example of docs/analysts.md (alice, bob, carol): `make demo`")
    print(
        "  # the analysts' charts on ClickHouse's /dashboard page: `make dashboard` prints the URL"
    )


def up(settings: StackSettings, timeout: float = 180.0) -> int:
    """Start the stack in the background and return once every service is healthy."""
    if _read_state(settings) is not None:
        print("the stack is already running")
        return status(settings)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stack.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "compose", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = (log_dir / "stack.log").read_text(errors="replace").splitlines()[-30:]
            print("the stack failed to start:\n" + "\n".join(tail), file=sys.stderr)
            return 1
        if _read_state(settings) is not None:
            _wait_ready(settings, child, deadline)
            return status(settings)
        time.sleep(0.2)
    print(f"the stack was not ready after {timeout:.0f}s; see {log_dir}", file=sys.stderr)
    return 1


def _wait_ready(
    settings: StackSettings, supervisor: subprocess.Popen[bytes], deadline: float
) -> None:
    """Return once the edge publishes to the broker and the projector consumes (topics
    exist, partitions assigned, logs checked).

    Healthy is not enough: a call sent before the group join is counted only after it
    (seconds on a fresh stack), and `make up` promises that what follows is seen at once.
    """
    for name, port, waiting in (
        ("edge", settings.edge_port, "calls are spooled until it is"),
        ("projector", settings.projector_port, "calls wait in Kafka until it does"),
    ):
        reason = _ready(f"http://{settings.host}:{port}/readyz", supervisor, deadline)
        if reason is not None:
            print(f"the {name} is not ready yet ({reason}): {waiting}")


def _ready(url: str, supervisor: subprocess.Popen[bytes], deadline: float) -> str | None:
    """None once ``url`` answers 200; else why not, at the deadline."""
    reason = "no answer"
    while time.monotonic() < deadline and supervisor.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own URL
                return None
        except urllib.error.HTTPError as e:
            reason = e.read().decode(errors="replace").strip()
        except OSError as e:
            reason = str(e)
        time.sleep(0.1)
    return reason


def down(settings: StackSettings, timeout: float = 90.0) -> int:
    state = _read_state(settings)
    if state is None:
        print("the stack is not running")
        return 0
    pid = state["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        print(f"the stack (pid {pid}) did not stop within {timeout:.0f}s", file=sys.stderr)
        return 1
    print("stopped")
    return 0


def status(settings: StackSettings) -> int:
    state = _read_state(settings)
    if state is None:
        print("the stack is not running (start it with `make up` or `make run`)")
        return 0
    print(f"the stack is running (supervisor pid {state['pid']}):")
    services = state.get("services")
    if isinstance(services, dict):
        for name, info in services.items():
            if not isinstance(info, dict):
                continue
            line = f"  {name:<11} {info.get('state', '?'):<9} restarts {info.get('restarts', 0)}"
            line += f"  pid {info.get('pid') or '-':<8} {info.get('endpoint', '')}"
            if info.get("last_exit"):
                line += f"  (last exit: {info['last_exit']})"
            print(line)
    external = state.get("external")
    if isinstance(external, dict):
        for name, endpoint in external.items():
            print(f"  {name:<11} {endpoint}")
    _print_try_it(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose", description=__doc__)
    parser.add_argument("command", choices=("run", "up", "down", "status"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s stack %(message)s")
    try:
        settings = StackSettings.from_env()
        commands = {"run": run, "up": up, "down": down, "status": status}
        return commands[args.command](settings)
    except (ConfigError, StartError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
