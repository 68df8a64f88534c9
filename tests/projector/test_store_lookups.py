"""The projector's ClickHouse look-ups find ids exactly, whatever characters they hold.

The look-ups send ids as external tables (JSONCompactColumns, see projector/store.py): these
tests prove the escaping against the real server, with the characters an id may carry.
"""

from __future__ import annotations

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.external import ExternalData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projector.dedupe import COUNTED, dedupe_key
from projector.rows import CLICKS_COLUMNS, SALES_CALLS_COLUMNS, click_row, sales_call_row
from projector.settings import ProjectorSettings
from projector.store import Store, json_columns
from scenario import T0, click, sale

# Characters with a meaning in JSON or SQL, drawn often so every example holds some.
SPECIAL = st.sampled_from(list("'\\\t\n\r\x00`\"?{}"))
HOSTILE = ["it's", "back\\slash", "tab\there", "new\nline", "quote'\\'", "é€😀", "\\'", "x" * 500]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.text(st.one_of(SPECIAL, st.characters(exclude_categories=["Cs"])))))
async def test_external_key_tables_read_back_as_the_same_text(
    ch: AsyncClient, values: list[str]
) -> None:
    rows = [(v, v[::-1]) for v in values]
    data = ExternalData(
        file_name="wanted.json", data=json_columns(rows, 2), fmt="JSONCompactColumns",
        structure="a String, b String",
    )  # fmt: skip
    result = await ch.query("SELECT a, b FROM wanted", external_data=data)
    assert result.result_rows == rows


async def test_counted_and_clicks_of_find_hostile_ids_exactly(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    s = projector_settings
    store = await Store.connect(s.clickhouse_url, s.clickhouse_database)
    try:
        generation = await store.prepare()
        calls = [sale(f"e{i}", tx, customer_id=tx) for i, tx in enumerate(HOSTILE)]
        rows = [sales_call_row(c, COUNTED, None, ("t", 0, i, 0, 1)) for i, c in enumerate(calls)]
        await store.insert(f"sales_calls_g{generation}", SALES_CALLS_COLUMNS, rows, "calls")
        clicks = [click(f"c{i}", tx, "k", "l", at=T0) for i, tx in enumerate(HOSTILE)]
        click_rows = [click_row(c, ("c", 0, i, 0, 1)) for i, c in enumerate(clicks)]
        await store.insert(f"clicks_g{generation}", CLICKS_COLUMNS, click_rows, "clicks")

        near_misses = [("demo", tx + " ", "") for tx in HOSTILE] + [("demo", "it", "")]
        found = await store.counted(generation, [dedupe_key(c) for c in calls] + near_misses)
        assert found == {dedupe_key(c): c.event_id for c in calls}

        touches = await store.clicks_of(
            generation, [("demo", tx) for tx in [*HOSTILE, "it"]], T0 - 1, T0 + 1
        )
        assert sorted(t.customer_id for t in touches) == sorted(HOSTILE)
    finally:
        await store.close()
