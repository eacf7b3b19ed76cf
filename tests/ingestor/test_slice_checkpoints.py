"""A slice's checkpoint after an acknowledged page (one statement, migration 0080): saved with the resource's totals
and the page's refusals only while the process holds the slice's claim and the run is current; otherwise nothing
of it is saved, so no page is counted twice and a lost claim's page is the new holder's to page."""

from __future__ import annotations

from datetime import datetime, timezone

from ingestor.sources.checkpoints import ImportCheckpoint
from ingestor.sources.refusals import Refused
from stripe_sim import SimServer
from tests.ingestor.conftest import ControlClient, connect

LEASE_S = 30.0


async def test_a_page_counts_once_and_only_for_the_slices_holder_in_the_current_run(
        control: ControlClient, sim: SimServer) -> None:
    tenant, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, pool = control.checkpoints, control.pool
    await checkpoints.start_import(connection_id, ["charges"], 0, 10_000, "on_demand")

    async def charges() -> tuple[int, int | None]:
        [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "charges"]
        return run.objects_published, run.oldest_created

    async def refused_rows() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM dead_lettered_events WHERE tenant_id = $1", tenant))

    [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "charges"]
    await checkpoints.prepare_slices(run, 1)
    piece = await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S)
    assert piece is not None
    piece.last_object_id, piece.oldest_created = "ch_100", 9_000
    refusal = Refused(tenant, "import", "charges", "ch_bad", "malformed_object", "no amount; left out")
    assert await checkpoints.save_slice_page(piece, 100, "worker-a", LEASE_S, [refusal])
    assert await charges() == (100, 9_000) and await refused_rows() == 1

    # A process that does not hold the claim (its own expired and another took the slice) saves nothing.
    piece.last_object_id, piece.oldest_created = "ch_200", 8_000
    other = Refused(tenant, "import", "charges", "ch_worse", "malformed_object", "no amount; left out")
    assert not await checkpoints.save_slice_page(piece, 100, "worker-b", LEASE_S, [other])
    assert not await checkpoints.save_slice_page(piece, 100, "worker-b", LEASE_S)
    assert await charges() == (100, 9_000) and await refused_rows() == 1
    stored = await pool.fetchrow("SELECT last_object_id, objects_published FROM import_slices WHERE connection_id = $1 "
                                 "AND resource = 'charges' AND run_id = $2", connection_id, piece.run_id)
    assert (stored["last_object_id"], stored["objects_published"]) == ("ch_100", 100)

    # The holder goes on.
    assert await checkpoints.save_slice_page(piece, 100, "worker-a", LEASE_S)
    assert await charges() == (200, 8_000)

    # A newer run replaced this one: the old run's page adds nothing to the new run.
    await checkpoints.start_import(connection_id, ["charges"], 0, 10_000, "on_demand")
    assert not await checkpoints.save_slice_page(piece, 100, "worker-a", LEASE_S)
    assert await charges() == (0, None)


async def test_a_pause_for_the_connections_status_holds_only_while_the_connection_has_it(
        control: ControlClient, sim: SimServer) -> None:
    """A pass that met a 401 pauses the import as it ends; a new key or a green key Test changed the status (and
    resumed the import) meanwhile: that pause is not made. A pause that is no status (a page to blame) always is."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, pool = control.checkpoints, control.pool
    await checkpoints.start_import(connection_id, ["charges"], 0, 10_000, "on_demand")

    async def paused() -> set[str | None]:
        return {c.paused_reason for c in await checkpoints.import_checkpoints(connection_id) if not c.done}

    assert not await checkpoints.pause_import(connection_id, "key_invalid")  # the connection is healthy
    assert await paused() == {None}
    await pool.execute("UPDATE stripe_connections SET status = 'key_invalid' WHERE connection_id = $1", connection_id)
    assert await checkpoints.pause_import(connection_id, "key_invalid") and await paused() == {"key_invalid"}
    await checkpoints.resume_import(connection_id)
    await pool.execute("UPDATE stripe_connections SET status = 'permission_missing' WHERE connection_id = $1",
                       connection_id)
    assert not await checkpoints.pause_import(connection_id, "key_invalid")  # another stop: the pass stops on it
    assert await checkpoints.pause_import(connection_id, "unreadable_page") and await paused() == {"unreadable_page"}
    await checkpoints.resume_import(connection_id)
    await pool.execute("UPDATE stripe_connections SET key_ciphertext = NULL WHERE connection_id = $1", connection_id)
    assert await checkpoints.pause_import(connection_id, "disconnected")  # no key to read with: paused


async def test_a_429_of_a_request_in_flight_when_the_key_was_found_dead_leaves_the_connection_stopped(
        control: ControlClient, sim: SimServer) -> None:
    """Else the connection reads again (`rate_limited` does not stop reading), its import's pause is skipped as
    stale, and the next pass tries the dead key once more."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    store, now = control.store, datetime.now(timezone.utc)

    async def status() -> tuple[str, str | None]:
        connection = await store.get_connection(connection_id)
        assert connection is not None
        return connection.status, connection.last_error_code

    await store.record_error(connection_id, "key_invalid", "api_key_invalid", "the key was revoked", now)
    await store.record_error(connection_id, "rate_limited", "rate_limit", "429", now)
    assert await status() == ("key_invalid", "rate_limit")  # the error is recorded, the status stays
    await store.recover(connection_id, ("key_invalid",), now)
    await store.record_error(connection_id, "rate_limited", "rate_limit", "429", now)
    assert await status() == ("rate_limited", "rate_limit")  # a live key's 429 still says so


async def test_a_lease_that_ran_out_under_a_slice_still_paged_here_is_not_taken_again_here(
        control: ControlClient, sim: SimServer) -> None:
    """A renewal held up (Postgres slow, a lock) lets a lease run out while a worker of this process still pages the
    slice. Another worker of the same process must not take it again: both would page it, and publish it twice.
    A slice of this process nobody here pages (its release failed) is not renewed, so it lapses and is taken again;
    another process takes any slice whose lease ran out. Renewals are per connection."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    _, _, other_connection, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, pool = control.checkpoints, control.pool
    for connection in (connection_id, other_connection):
        await checkpoints.start_import(connection, ["charges"], 0, 10_000, "on_demand")
        [run] = [c for c in await checkpoints.import_checkpoints(connection) if c.resource == "charges"]
        await checkpoints.prepare_slices(run, 1)
    piece = await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S)
    elsewhere = await checkpoints.claim_slice(other_connection, "worker-a", LEASE_S)
    assert piece is not None and elsewhere is not None

    async def leases_run_out() -> None:
        await pool.execute("UPDATE import_slices SET claimed_until = now() - interval '1 second' "
                           "WHERE connection_id = ANY($1::text[])", [connection_id, other_connection])

    async def lapsed(connection: str) -> bool:
        return bool(await pool.fetchval("SELECT claimed_until < now() FROM import_slices WHERE connection_id = $1",
                                        connection))

    await leases_run_out()
    paging = [piece.key]
    assert await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S, paging) is None
    # Nor when another process took it meanwhile and let it go (its page here is still out; its save will fail).
    await pool.execute("UPDATE import_slices SET claimed_by = NULL, claimed_until = NULL WHERE connection_id = $1",
                       connection_id)
    assert await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S, paging) is None
    assert not await checkpoints.save_slice_page(piece, 10, "worker-a", LEASE_S)
    assert (await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S)) is not None  # once let go here
    assert await checkpoints.save_slice_page(piece, 10, "worker-a", LEASE_S)  # its new holder saves, and renews

    await leases_run_out()
    await checkpoints.renew_claims(connection_id, "worker-a", LEASE_S, paging)
    assert not await lapsed(connection_id)
    assert await lapsed(other_connection)  # only the connection's own claims are renewed

    await leases_run_out()
    await checkpoints.renew_claims(connection_id, "worker-a", LEASE_S, [])  # nobody here pages it any more
    assert await lapsed(connection_id)
    taken = await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S)
    assert taken is not None and taken.key == piece.key
    await leases_run_out()
    taken = await checkpoints.claim_slice(connection_id, "worker-b", LEASE_S)  # another process, paging none of it
    assert taken is not None and taken.key == piece.key
    assert not await checkpoints.save_slice_page(piece, 10, "worker-a", LEASE_S)  # the old holder stops


async def test_a_half_given_to_another_process_keeps_its_guess_and_sees_a_burst_at_its_top(
        control: ControlClient, sim: SimServer) -> None:
    """A half split off for another process importing the connection (or claimed again after a restart) guesses
    what its parent had seen, as it would here (migration 0083): it may be split before its first page, and a first
    page within a bulk migration's burst is a burst against that guess, expected only as far as a burst reaches.
    Before, it waited for its first page, and took that page's density for its whole range: 100 objects in a second
    over months below, halved on down to the burst, each half sparse and ending in a part-empty page."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, day = control.checkpoints, 86400
    await checkpoints.start_import(connection_id, ["charges"], 0, 200 * day, "on_demand")
    [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "charges"]
    await checkpoints.prepare_slices(run, 1)
    piece = await checkpoints.claim_slice(connection_id, "worker-a", LEASE_S)
    assert piece is not None and piece.inherited_density is None  # an initial slice: nothing known yet
    piece.read_page(list(range(200 * day, 200 * day - 100 * 864, -864)))  # 100 a day
    piece.last_object_id = "ch_100"
    piece.counted(100)
    assert await checkpoints.save_slice_page(piece, 100, "worker-a", LEASE_S)
    given = await checkpoints.split_slice(piece, 100 * day, "worker-a", LEASE_S, keep=False)
    assert given is not None and given.inherited_density == 100 / (99 * 864)

    claimed = await checkpoints.claim_slice(connection_id, "worker-b", LEASE_S)
    assert claimed is not None and claimed.key == given.key and claimed.range_end == 100 * day - 1
    assert (claimed.inherited_density, claimed.inherited_span) == (given.inherited_density, given.inherited_span)
    expected = claimed.objects_left()
    assert expected is not None and expected == given.objects_left() and expected > 100  # worth splitting already
    claimed.read_page([100 * day - 1] * 100)  # its first page: 100 objects within its top second
    guess = claimed.inherited_density or 0.0
    assert claimed.in_burst() and claimed.objects_left() == 100 * 100 + guess * (100 * day - 1 - 100)


async def test_a_pass_starts_a_new_rate_only_after_the_import_stood_still(
        control: ControlClient, sim: SimServer) -> None:
    """Every pass of every process started the import's rate again: with two workers, the second looked in every few
    seconds, so the rate covered a few seconds or none, and the page showed no time left."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, pool = control.checkpoints, control.pool
    await checkpoints.start_import(connection_id, ["charges"], 0, 10_000, "on_demand")
    await checkpoints.begin_pass(connection_id)
    started = await pool.fetchval("SELECT pass_started_at FROM import_runs WHERE connection_id = $1 "
                                  "AND resource = 'charges'", connection_id)
    assert started is not None
    await pool.execute("UPDATE import_runs SET pass_started_at = pass_started_at - interval '20 seconds', "
                       "objects_published = 500 WHERE connection_id = $1", connection_id)  # paged since, by anyone
    await checkpoints.begin_pass(connection_id)  # another process's pass, or this one's next
    [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "charges"]
    assert run.objects_at_pass_start == 0 and run.pass_started_at is not None
    assert (run.updated_at - run.pass_started_at).total_seconds() >= 19  # the rate's window goes on

    await pool.execute("UPDATE import_runs SET updated_at = now() - interval '1 minute' WHERE connection_id = $1",
                       connection_id)  # nothing saved for a minute: stood still (paused, or no worker)
    await checkpoints.begin_pass(connection_id)
    [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "charges"]
    assert run.objects_at_pass_start == 500  # a new rate from here


async def test_subscriptions_time_before_the_window_is_a_slice_of_its_own_outside_the_progress(
        control: ControlClient, sim: SimServer) -> None:
    """Subscriptions are listed whatever their age: the time before the window is one slice (paged by what its own
    pages show), and the share of the window covered leaves it out. Counted over decades, it made the share 2 % of an
    old account's, or 98 % of a young one's after one empty page."""
    _, _, connection_id, _ = await connect(control, sim, sim.create_account(customers=1).id)
    checkpoints, pool = control.checkpoints, control.pool
    await checkpoints.start_import(connection_id, ["subscriptions"], 1_000, 2_000, "on_demand")

    async def subscriptions() -> ImportCheckpoint:
        [run] = [c for c in await checkpoints.import_checkpoints(connection_id) if c.resource == "subscriptions"]
        return run

    run = await subscriptions()
    assert (run.window_start, run.listed_from) == (1_000, 0)
    await checkpoints.prepare_slices(run, 2)
    ranges = [tuple(r) for r in await pool.fetch(
        "SELECT range_start, range_end FROM import_slices WHERE connection_id = $1 AND resource = 'subscriptions' "
        "ORDER BY range_start", connection_id)]
    assert ranges == [(0, 999), (1_000, 1_499), (1_500, 2_000)]
    await pool.execute("UPDATE import_slices SET done = true WHERE connection_id = $1 AND range_start = 0",
                       connection_id)
    assert (await subscriptions()).covered() == 0.0  # nothing of the window yet
    await pool.execute("UPDATE import_slices SET done = true WHERE connection_id = $1 AND range_start = 1500",
                       connection_id)
    assert abs((await subscriptions()).covered() - 501 / 1_000) < 1e-9
