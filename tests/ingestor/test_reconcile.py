"""Check against Stripe: Stripe's counts and charge money for a range against the tables', with the ids
that differ — and a difference found when the tables lose a row or a charge's money."""

from __future__ import annotations

import asyncpg
import pytest

from ingestor.sources.reconcile import Reconciler, Tally, compare, tally_stripe_charge
from service.worker import Worker, render_reconcile
from stripe_sim import SimServer
from tests.ingestor.conftest import ControlClient, connect
from tests.projections.support import project_until_idle


def test_compare_names_the_ids_and_the_money_that_differ() -> None:
    stripe = Tally(ids={"charges": {"ch_1", "ch_2"}, "customers": {"cus_1"}}, succeeded={"usd": 3000}, refunded={"usd": 500})
    ours = Tally(ids={"charges": {"ch_1", "ch_3"}, "customers": {"cus_1"}}, succeeded={"usd": 2000}, refunded={"usd": 500})
    report = compare(stripe, ours)
    assert not report["matches"]
    assert report["resources"]["charges"] == {"stripe": 2, "ours": 2, "missing_here": ["ch_2"], "only_here": ["ch_3"],
                                              "matches": False}
    assert report["resources"]["customers"]["matches"]
    assert report["charges_by_currency"]["usd"]["matches"] is False
    assert "DIFFERS" in render_reconcile(report) and "missing here: ch_2" in render_reconcile(report)
    assert compare(stripe, stripe)["matches"]


def test_stripes_charges_are_tallied_as_revenue_counts_them() -> None:
    """Gross is the amount captured, and a refund is money returned: an authorisation not captured (released
    before basil as a refund) adds nothing on Stripe's side, as on ours; a charge whose money cannot be derived is
    named, never counted as 0."""
    base = {"object": "charge", "currency": "usd", "created": 1_760_000_000, "status": "succeeded"}
    stripe = Tally()
    tally_stripe_charge(stripe, base | {"id": "ch_paid", "amount": 3000, "amount_captured": 3000, "captured": True,
                                        "amount_refunded": 500}, "2026-10-28.endive")
    tally_stripe_charge(stripe, base | {"id": "ch_released", "amount": 1000, "amount_captured": 0, "captured": False,
                                        "amount_refunded": 1000}, "2024-06-20")
    tally_stripe_charge(stripe, base | {"id": "ch_partly", "amount": 1000, "amount_captured": 600, "captured": True,
                                        "amount_refunded": 400}, "2024-06-20")
    assert (stripe.succeeded, stripe.refunded, stripe.unreadable) == ({"usd": 3600}, {"usd": 500}, set())
    tally_stripe_charge(stripe, base | {"id": "ch_odd", "amount": None, "captured": True}, "2026-10-28.endive")
    report = compare(stripe, Tally(succeeded={"usd": 3600}, refunded={"usd": 500}))
    assert not report["matches"] and report["unreadable_at_stripe"] == ["ch_odd"]


@pytest.mark.integration
async def test_an_imported_account_matches_stripe_and_a_lost_row_shows(
    control: ControlClient, worker: Worker, sim: SimServer, pool_of_control: asyncpg.Pool,
) -> None:
    account = sim.create_account(customers=12, months=6).id
    sim.set_rate_limit(account, 1000)
    tenant, _, connection_id, _ = await connect(control, sim, account)
    outcome = await worker.importer.run_connection(connection_id)
    assert outcome.state == "done", outcome
    await project_until_idle(control.settings, pool_of_control)
    reconciler = Reconciler(pool_of_control, control.store, control.readers, control.settings.kafka, projected_wait_s=30)
    checkpoints = await worker.checkpoints.import_checkpoints(connection_id)
    window = (checkpoints[0].window_start, checkpoints[0].window_end)

    report = await reconciler.run(connection_id, window, "test")
    assert report["matches"], render_reconcile(report)
    assert report["resources"]["charges"]["stripe"] > 0 and report["charges_by_currency"]

    lost = await pool_of_control.fetchval(  # one of this tenant's (the test database holds other tests' tenants)
        "DELETE FROM projection.charges WHERE id = (SELECT id FROM projection.charges "
        "WHERE tenant_id = $1 AND status = 'succeeded' ORDER BY id LIMIT 1) RETURNING id", tenant)
    report = await reconciler.run(connection_id, window, "test")
    assert not report["matches"]
    assert report["resources"]["charges"]["missing_here"] == [lost]
    assert any(not m["matches"] for m in report["charges_by_currency"].values())
    assert (await reconciler.runs.latest(connection_id))["matches"] is False  # type: ignore[index]


@pytest.fixture
def pool_of_control(control: ControlClient) -> asyncpg.Pool:
    return control.pool
