"""A call under the universe registry: counted only for a registered universe. Pure.

Applied after the call's own rules (projector/interpret.py), with the registry as the
projector has read it when it projects the call: a change applies from then on, and a
rebuild applies the registry of its start to the whole log.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from schemas.events import SaleCall
from schemas.reasons import Reason
from schemas.universes import Registry


def judge(call: SaleCall, registry: Registry) -> SaleCall:
    """``call`` as the registry reads it: rejected (``universe_unknown``,
    ``amount_above_limit``), given the universe's default currency, or as it was."""
    if call.status != "accepted":
        return call
    settings = registry.universes.get(call.universe)
    if settings is None:
        if registry.enforced:
            return _rejected(call, Reason.UNIVERSE_UNKNOWN)
        return call
    if settings.max_amount and Decimal(call.amount) > Decimal(settings.max_amount):
        return _rejected(call, Reason.AMOUNT_ABOVE_LIMIT)
    if not call.currency and settings.currency:
        # Stored in the ledger row, so the rollups group the sale under it.
        return dataclasses.replace(call, currency=settings.currency)
    return call


def _rejected(call: SaleCall, reason: Reason) -> SaleCall:
    # As the call's own rules reject one: no canonical amount, no click context.
    return dataclasses.replace(
        call, status="rejected", reason=reason, amount="", campaign_id="", link_id="",
        product="", click_customer_id="", clicked_at_ms=0,
    )  # fmt: skip
