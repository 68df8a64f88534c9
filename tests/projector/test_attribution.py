from projector.attribution import DAY_MS, Attribution, attribute
from scenario import sale
from schemas.events import ClickContext

WINDOW = 30 * DAY_MS
SOLD = 100 * DAY_MS


def touch(campaign: str, at: int, *, customer: str = "c1", universe: str = "demo") -> ClickContext:
    return ClickContext(
        universe, customer, campaign, f"{campaign}-link", "main", at, f"click-{campaign}"
    )


def test_last_click_before_the_sale_wins() -> None:
    clicks = [touch("k1", SOLD - 5 * DAY_MS), touch("k2", SOLD - DAY_MS)]
    result = attribute(sale("e1", "t1", customer_id="c1", at=SOLD), clicks, WINDOW)
    assert (result.campaign_id, result.link_id) == ("k2", "k2-link")
    assert result.clicked_at_ms == SOLD - DAY_MS


def test_clicks_after_the_sale_or_outside_the_window_are_ignored() -> None:
    clicks = [touch("late", SOLD + 1), touch("old", SOLD - WINDOW - 1)]
    assert attribute(sale("e1", "t1", customer_id="c1", at=SOLD), clicks, WINDOW) == Attribution(
        "c1"
    )


def test_a_click_exactly_at_the_window_edge_still_counts() -> None:
    clicks = [touch("edge", SOLD - WINDOW)]
    result = attribute(sale("e1", "t1", customer_id="c1", at=SOLD), clicks, WINDOW)
    assert result.campaign_id == "edge"


def test_a_click_of_another_universe_or_customer_never_attributes() -> None:
    clicks = [touch("other-u", SOLD - 1, universe="u2"), touch("other-c", SOLD - 1, customer="c2")]
    assert attribute(sale("e1", "t1", customer_id="c1", at=SOLD), clicks, WINDOW).campaign_id == ""


def test_the_click_the_sale_carries_wins_without_a_look_up() -> None:
    call = sale("e1", "t1", at=SOLD, context=("c9", "k7", "l7", SOLD - 10))
    result = attribute(call, [touch("k1", SOLD - 1, customer="c9")], WINDOW)
    assert (result.customer_id, result.campaign_id, result.link_id) == ("c9", "k7", "l7")


def test_a_carried_click_outside_the_window_falls_back_to_stored_clicks() -> None:
    call = sale("e1", "t1", customer_id="c1", at=SOLD, context=("c1", "k7", "l7", 1))
    result = attribute(call, [touch("k1", SOLD - 1)], WINDOW)
    assert result.campaign_id == "k1"


def test_ties_on_click_time_break_on_the_click_id_so_replays_agree() -> None:
    a = ClickContext("demo", "c1", "ka", "la", "", SOLD - 1, "click-a")
    b = ClickContext("demo", "c1", "kb", "lb", "", SOLD - 1, "click-b")
    call = sale("e1", "t1", customer_id="c1", at=SOLD)
    assert attribute(call, [a, b], WINDOW) == attribute(call, [b, a], WINDOW)
    assert attribute(call, [a, b], WINDOW).campaign_id == "kb"


def test_an_anonymous_sale_is_unattributed() -> None:
    assert attribute(sale("e1", "t1", at=SOLD), [touch("k1", SOLD - 1)], WINDOW) == Attribution("")
