"""The README's shell commands, run exactly as written, in order, as a newcomer runs them.

Every ```sh block of README.md, then of the reference and operating pages (the universe
registry, rebuild), is read out of the file and run verbatim by one bash, so a variable set
by one command is there for the next. They run in a network namespace of their
own (``unshare --net``: these machines and CI run as root), so the README's own addresses
(the edge on 127.0.0.1:8080, ClickHouse on :8123) are free even while a developer's
`make run` holds them; only ``TRACKER_DATA_DIR`` points the stack at a temporary folder.

Each command must exit 0; a command whose comment reads ``# => TEXT`` must print TEXT. The
block that starts the README (`make run`, `make test`) is the exception: `make test` is what
CI runs (this test is part of it), and `make run` stays in the foreground, so it is started,
waited for and stopped with Ctrl-C (SIGINT to its process group) as a terminal would.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Their ```sh blocks are commands for the local stack too (other pages' are for production).
PAGES = (ROOT / "docs" / "reference.md", ROOT / "docs" / "operating.md")
MARK = "__readme_command_done__"


@dataclass(frozen=True)
class Command:
    text: str
    expected: str | None  # what `# => TEXT` says it prints


def blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M)


def commands(block: str) -> list[Command]:
    """The block's commands: continuation lines and multi-line quotes joined."""
    found: list[Command] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            found.append(Command(pending, _expected(pending)))
        pending = ""
    assert not pending, f"unterminated command in the README: {pending!r}"
    return found


def _expected(command: str) -> str | None:
    match = re.search(r"#\s*=>\s*(.+?)\s*$", command.splitlines()[-1])
    return match.group(1) if match else None


def clean_environment(data_dir: Path) -> dict[str, str]:
    """A newcomer's shell: none of the test session's TRACKER_* settings, no outer make's
    flags (the suite itself runs under `make test`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACKER_", "MAKE", "MFLAGS", "PYTEST_"))
    }
    return {**env, "TRACKER_DATA_DIR": str(data_dir)}


def in_own_network(script: str) -> list[str]:
    """argv running ``script`` with bash in a fresh network namespace (loopback up)."""
    return ["unshare", "--net", "--fork", "bash", "-c", f"ip link set lo up && {script}"]


def script_of(cmds: list[Command]) -> str:
    """One bash script: each command, then a marker line with its exit code; the stack is
    stopped at the end whatever happened."""
    # Everything a command prints, in order, belongs to it (rebuild reports on stderr).
    lines = ["exec 2>&1", "trap 'make down >/dev/null 2>&1' EXIT"]
    for i, c in enumerate(cmds):
        lines += [c.text, f'echo "{MARK} {i} $?"']
    return "\n".join(lines) + "\n"


def test_every_readme_command_runs_as_written_against_the_local_stack(tmp_path: Path) -> None:
    all_blocks = blocks(README.read_text())
    assert len(all_blocks) >= 2, "the README has its two commands and a try-it block"
    pages = [block for page in PAGES for block in blocks(page.read_text())]
    cmds = [c for block in all_blocks[1:] + pages for c in commands(block)]
    assert any(c.text.startswith("make up") for c in cmds)
    script = tmp_path / "readme.sh"
    script.write_text(script_of(cmds))
    result = subprocess.run(
        in_own_network(f"bash {shlex.quote(str(script))}"),
        cwd=ROOT, env=clean_environment(tmp_path / "data"), capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    outputs = re.split(rf"^{MARK} (\d+) (\d+)\n", result.stdout, flags=re.M)
    # [before first, i, code, text, i, code, text, ...]: the text before each marker.
    done = {
        int(outputs[k]): (int(outputs[k + 1]), outputs[k - 1]) for k in range(1, len(outputs), 3)
    }
    for i, c in enumerate(cmds):
        assert i in done, (
            f"never finished: {c.text}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        code, out = done[i]
        assert code == 0, f"{c.text!r} exited {code}:\n{out[-3000:]}"
        if c.expected is not None:
            assert c.expected in out, f"{c.text!r} printed {out[-2000:]!r}, not {c.expected!r}"


def test_make_run_starts_the_stack_in_the_foreground_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    first = commands(blocks(README.read_text())[0])
    assert [c.text.split("#")[0].strip() for c in first] == ["make run", "make test"]
    log = (tmp_path / "run.log").open("w+")
    run = subprocess.Popen(
        in_own_network("exec make run"), cwd=ROOT, env=clean_environment(tmp_path / "data"),
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything." not in Path(log.name).read_text():
            assert run.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.5)
        text = Path(log.name).read_text()
        assert "the tracker is running:" in text and "http://127.0.0.1:8080" in text
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        # make itself dies of the SIGINT once its recipe returned, as every make target does.
        assert run.wait(timeout=120) in (0, -signal.SIGINT), Path(log.name).read_text()[-3000:]
        # The stack stopped in order (edge, projector, ClickHouse, broker, store) and cleaned up.
        assert Path(log.name).read_text().rstrip().endswith("stopped")
        assert not (tmp_path / "data" / "run" / "stack.json").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        log.close()
