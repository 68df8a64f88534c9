"""The README's first hour, as a newcomer follows it: `make up` prints calls to try, a link
signed with the local stack's secret is followed, `make demo` makes the SQL example of
docs/analysts.md answer what that page shows, `make status` after `make down` says "not
running"."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from chaos.stack import LocalStack
from helpers import cells

ROOT = Path(__file__).resolve().parents[2]


def documented_examples() -> list[tuple[str, list[list[str]]]]:
    """The example queries of docs/analysts.md ("A small example") and the rows it shows for
    each."""
    page = (ROOT / "docs" / "analysts.md").read_text()
    block = page[page.index("\n## A small example\n") :]
    block = block[
        block.index("```sql") + len("```sql") : block.index("```", block.index("```sql") + 6)
    ]
    examples: list[tuple[str, list[list[str]]]] = []
    sql: list[str] = []
    for line in block.strip().splitlines():
        if line.startswith("--"):
            examples[-1][1].append(line.removeprefix("--").split())
        elif line.strip():
            sql.append(line)
            if line.rstrip().endswith(";"):
                examples.append((" ".join(sql).rstrip(";"), []))
                sql = []
    return examples


def follow(link: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: object, **__: object) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(link, timeout=10)
    except urllib.error.HTTPError as answer:
        return answer.code
    return 200


def test_up_prints_calls_to_try_and_demo_makes_the_readme_examples_true(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    up = stack.compose("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # `up` returned: the projector already consumes, so what follows is seen at once.
        ready = f"http://127.0.0.1:{stack.settings.projector_port}/readyz"
        with urllib.request.urlopen(ready, timeout=5) as response:
            assert response.status == 200
        secrets_file = stack.settings.data_dir.resolve() / "context.json"
        for output in (up.stdout, stack.compose("status").stdout):
            assert "try:" in output
            assert f"{stack.edge_url}/click?u=demo&c=alice" in output
            assert "&click=$click" in output  # the pixel call attributed to that click
            assert f"TRACKER_API_KEYS in {secrets_file}" in output
            assert "Authorization: Bearer " in output and "/v1/sales" in output
            assert "make demo" in output

        # sign-link, without TRACKER_SECRET: the running edge accepts the link.
        sign = subprocess.run(
            [sys.executable, "-m", "ingest", "sign-link", "--universe", "demo",
             "--customer", "dave", "--campaign", "spring", "--link", "hero",
             "--url", "https://shop.example/landing"],
            cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert sign.returncode == 0, sign.stderr
        assert f"the local stack's secret from {secrets_file}" in sign.stderr
        assert follow(sign.stdout.strip()) == 302

        demo = subprocess.run(
            [sys.executable, "-m", "compose.demo"],
            cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr

        examples = documented_examples()
        assert len(examples) == 6
        today = datetime.now(UTC).date()
        for sql, shown in examples:
            got = [cells(row) for row in stack.query(sql)]
            if "campaign_turnover_daily" in sql:
                # Live traffic is stamped with today's date, not the example's fixed days:
                # the totals are the example's, on today (or yesterday, across midnight UTC).
                days = {str(today), str(today - timedelta(days=1))}
                assert {row[0] for row in got} <= days, got
                total = [sum(Decimal(str(row[i])) for row in got) for i in (1, 2)]
                expected = [sum(Decimal(row[i]) for row in shown) for i in (1, 2)]
                assert total == expected, (sql, got, shown)
                continue
            assert got == [cells(row) for row in shown], (sql, got, shown)

        again = subprocess.run(
            [sys.executable, "-m", "compose.demo"],
            cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert again.returncode == 0 and "already loaded" in again.stdout
    finally:
        stack.down()
    status = stack.compose("status")
    assert status.returncode == 0
    assert re.fullmatch(r"the stack is not running \(start it .*\)\n", status.stdout)
    assert status.stderr == ""
