"""The Revenue page in headless Chromium (Debian's, driven by Playwright): every chart drawn at desktop and
phone widths (screenshots in test-artifacts/page/), the numbers as tables equal to the API's, the CSV
download, the currency switch and keyboard use — over a simulated year projected for one tenant."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, async_playwright, expect

from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import ControlSettings, PostgresSettings, ReaderSettings, Settings, VaultSettings
from projections.projector.store import PostgresProjectionStore
from projections.read.fx_rates import load_rates, parse_rates
from projections.read.money import format_money
from service.web import build_web_app
from stack import REPO_ROOT, postgres
from stack.up import Platform
from stripe_sim import CURRENT_VERSION, SimServer
from tests.conftest import TEST_DATABASE
from tests.helpers import pinned_sim_clock
from tests.page.test_connector_page import CHROMIUM_ARGS
from tests.projections.support import apply_all, history_envelopes

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("chromium") is None,
                                                          reason="Debian's chromium is not installed (.ci/run installs it)")]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "page"
CHARTS = ("mrr", "movements", "retention", "daily", "cohorts")
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@dataclass
class Site:
    base: str
    tenant_id: str
    token: str
    data: dict[str, Any]  # what the page's data call answers (test mode)
    dsn: str


@pytest.fixture(scope="module")
async def site(platform: Platform, clean_database: str) -> AsyncIterator[Site]:
    master = generate_master_key("rev")
    settings = Settings(postgres=PostgresSettings(dsn=clean_database),  # type: ignore[arg-type]
                        reader=ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, TEST_DATABASE)),  # type: ignore[arg-type]
                        vault=VaultSettings(master_keys=master),  # type: ignore[arg-type]
                        control=ControlSettings(admin_token="adm_" + master[-12:]))  # type: ignore[arg-type]
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=2)
    tenant_id, token = await PostgresTenantStore(pool, MasterKeyring.from_setting(master), settings.reader).create_tenant("Revenue Co")
    store = PostgresProjectionStore(pool, "revenue-page")
    async with SimServer(seed=5150, clock=pinned_sim_clock()) as sim:
        account = sim.create_account(api_version=CURRENT_VERSION, customers=60, months=12)
        envelopes = history_envelopes(sim, account.id, tenant_id)
    await apply_all(store, envelopes)
    server = TestServer(build_web_app(settings), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/tenants/{tenant_id}/revenue", params={"mode": "test"},
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            data = await resp.json()
    yield Site(base, tenant_id, token, data, clean_database)
    await server.close()
    await pool.close()


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        context = await browser.new_context(accept_downloads=True)
        page = await context.new_page()
        errors: list[str] = []
        # A CSP violation or a script error fails the test; a 404 of the connection (none in this mode) does not.
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text
                else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page
        finally:
            await browser.close()
        assert not errors, f"the page logged errors (CSP violations, script errors): {errors}"


async def sign_in(page: Page, site: Site) -> None:
    await page.goto(f"{site.base}/revenue")
    await page.get_by_label("Tenant id").fill(site.tenant_id)
    await page.get_by_label("Tenant API token").fill(site.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Revenue Co")).to_be_visible()
    for name in CHARTS:
        await expect(page.locator(f"#chart-{name} canvas").first).to_be_visible()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_every_chart_is_drawn_at_desktop_and_phone_width(site: Site, browser_page: Page, viewport: str) -> None:
    page = browser_page
    await page.set_viewport_size(VIEWPORTS[viewport])
    await sign_in(page, site)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in CHARTS:
        chart = page.locator(f"#chart-{name}")
        box = await chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 200, name
        assert box["x"] + box["width"] <= VIEWPORTS[viewport]["width"], f"{name} fits the {viewport} width"
        label = await chart.get_attribute("aria-label")
        assert label and len(label) > 20, f"{name} has a text summary for screen readers"
        await chart.screenshot(path=str(ARTIFACTS / f"revenue-{viewport}-{name}.png"))
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "nothing makes the page scroll sideways"
    await page.screenshot(path=str(ARTIFACTS / f"revenue-{viewport}-page.png"), full_page=True)


async def test_the_tables_hold_the_apis_numbers_as_money(site: Site, browser_page: Page) -> None:
    page = browser_page
    await sign_in(page, site)
    currency = await page.locator("#currency").input_value()
    assert currency == site.data["currencies"][0]
    rows = [r for r in site.data["mrr"] if r["currency"] == currency]
    await page.get_by_text("Numbers as a table").first.click()
    cells = await page.locator("#table-mrr tbody tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert cells == [[r["month"][:7], format_money(r["mrr"], currency), str(r["subscribers"])] for r in rows]
    kpi = next(r for r in site.data["kpis"] if r["currency"] == currency)
    await expect(page.locator("#kpi-list")).to_contain_text(format_money(kpi["arr"], currency))


async def test_the_csv_download_has_exact_minor_units(site: Site, browser_page: Page) -> None:
    page = browser_page
    await sign_in(page, site)
    currency = await page.locator("#currency").input_value()
    async with page.expect_download() as download_info:
        await page.locator("section[data-series=daily] button.csv").click()
    download = await download_info.value
    assert download.suggested_filename == f"daily-test-{currency}.csv"
    text = (await download.path()).read_text() if await download.path() else ""
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = [r for r in site.data["daily"] if r["currency"] == currency]
    assert [(r["day"], int(r["net"])) for r in rows] == [(r["day"], r["net"]) for r in expected]


async def test_currency_switch_and_keyboard_use(site: Site, browser_page: Page) -> None:
    page = browser_page
    await sign_in(page, site)
    if len(site.data["currencies"]) > 1:
        other = site.data["currencies"][1]
        await page.locator("#currency").select_option(other)
        await expect(page.locator("#table-mrr tbody tr").first).to_contain_text(format_money(
            next(r for r in site.data["mrr"] if r["currency"] == other)["mrr"], other)[:1])
    # Tab from the currency switch reaches the sign-out button, then each section's controls in order;
    # a CSV button is activated with Enter alone.
    await page.locator("#currency").focus()
    reached = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.textContent.trim() || document.activeElement.id"))
        if reached[-1] == "Download CSV":
            break
    assert "Numbers as a table" in reached and reached[-1] == "Download CSV", reached
    async with page.expect_download() as download_info:
        await page.keyboard.press("Enter")
    assert (await download_info.value).suggested_filename.startswith("mrr-test-")


async def load_gbp_rates(site: Site) -> None:
    """Month-end rates into GBP for the page's year, and today's (rates are never dated after the day they load)."""
    today = datetime.now(timezone.utc).date()
    days = {today}
    first = today.replace(day=1)
    for _ in range(14):
        days.add(first - timedelta(days=1))
        first = (first - timedelta(days=1)).replace(day=1)
    text = "date,currency,reporting_currency,rate\n" + "".join(
        f"{day},{cur},gbp,{rate + Decimal(i) / 1000}\n"
        for i, day in enumerate(sorted(days)) for cur, rate in (("usd", Decimal("0.79")), ("eur", Decimal("0.85")),
                                                                ("jpy", Decimal("0.0052"))))
    pool = await asyncpg.create_pool(site.dsn, min_size=1, max_size=1)
    try:
        await load_rates(pool, parse_rates(text, today))
    finally:
        await pool.close()


async def revenue(site: Site, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.base}/api/tenants/{site.tenant_id}/revenue", params={"mode": "test", **params},
                            headers={"Authorization": f"Bearer {site.token}"}) as resp:
            return resp.status, await resp.json()


async def test_all_currencies_in_one_reporting_currency_with_the_fx_effect_apart(site: Site, browser_page: Page) -> None:
    await load_gbp_rates(site)
    status, data = await revenue(site, reporting="gbp")
    assert status == 200 and data["currencies"] == ["gbp"] and "gbp" in data["reporting_currencies"]
    assert data["time_zone"] == "UTC"
    moved = [r for r in data["movements"] if r["closing_mrr"] is not None]
    assert len(moved) == 12 and all(not r["missing_rates"] for r in moved)
    for r in moved:
        parts = [Decimal(str(r[k])) for k in ("opening_mrr", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
                                              "reactivation_mrr", "fx_effect")]
        assert sum(parts) == Decimal(str(r["closing_mrr"])), r["month"]
    assert any(Decimal(str(r["fx_effect"])) != 0 for r in moved), "the rates moved every month"
    assert (await revenue(site, reporting="xyz"))[0] == 422
    assert (await revenue(site, reporting="GBP"))[0] == 400
    page = browser_page
    await sign_in(page, site)
    await page.locator("#currency").select_option("all:gbp")
    gbp = data["mrr"]
    await expect(page.locator("#table-mrr tbody tr").first).to_contain_text(format_money(gbp[0]["mrr"], "gbp"))
    cells = await page.locator("#table-mrr tbody tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert cells == [[r["month"][:7], format_money(r["mrr"], "gbp"), str(r["subscribers"])] for r in gbp]
    await expect(page.locator("#table-movements thead")).to_contain_text("FX effect")
    async with page.expect_download() as download_info:
        await page.locator("section[data-series=mrr] button.csv").click()
    path = await (await download_info.value).path()
    exported = list(csv.DictReader(io.StringIO(path.read_text() if path else "")))
    assert exported and all(r["currency"] == "gbp" and "missing_rates" in r for r in exported), \
        "a converted export names the currencies without a rate beside each amount"
    await page.locator("#chart-movements").screenshot(path=str(ARTIFACTS / "revenue-desktop-movements-gbp.png"))
    # and back to one currency: no FX column, the tenant's own amounts
    await page.locator("#currency").select_option(site.data["currencies"][0])
    await expect(page.locator("#table-movements thead")).not_to_contain_text("FX effect")


async def test_the_tenant_sets_its_time_zone_on_the_page_and_a_bad_name_changes_nothing(
    site: Site, browser_page: Page
) -> None:
    page = browser_page
    await sign_in(page, site)
    await expect(page.locator("#time-zone")).to_have_value("UTC")
    await page.locator("#time-zone").fill("Europe/Atlantis")
    await page.get_by_role("button", name="Save time zone").click()
    await expect(page.locator("#time-zone-status")).to_contain_text("not a time zone PostgreSQL knows")
    assert (await revenue(site))[1]["time_zone"] == "UTC"
    await page.locator("#time-zone").fill("Pacific/Auckland")
    await page.get_by_role("button", name="Save time zone").click()
    await expect(page.locator("#time-zone-status")).to_contain_text("Pacific/Auckland")
    status, data = await revenue(site)
    try:
        assert status == 200 and data["time_zone"] == "Pacific/Auckland"
        # the page's figures are the read API's in the new zone: the days shown are Auckland's
        currency = await page.locator("#currency").input_value()
        await page.get_by_text("Numbers as a table").nth(3).click()
        days = await page.locator("#table-daily tbody tr").evaluate_all("rows => rows.map(r => r.cells[0].textContent)")
        assert days == [r["day"] for r in data["daily"] if r["currency"] == currency] and days
    finally:
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{site.base}/api/tenants/{site.tenant_id}/time-zone", json={"time_zone": "UTC"},
                                headers={"Authorization": f"Bearer {site.token}"}) as resp:
                assert resp.status == 200
