"""The connector page in headless Chromium (Debian's, driven by Playwright) against the simulator:
the whole flow a person walks, with a screenshot of each step in test-artifacts/page/."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from playwright.async_api import Page, async_playwright, expect

from ingestor.connections.vault import MasterKeyring, generate_master_key
from plumbing.settings import (
    ControlSettings,
    HttpSettings,
    ImporterSettings,
    PollerSettings,
    Settings,
    StripeSettings,
    VaultSettings,
)
from service.web import build_web_app
from service.worker import open_worker
from stack import REPO_ROOT
from stripe_sim import SimServer

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("chromium") is None,
                                                          reason="Debian's chromium is not installed (.ci/run installs it)")]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "page"
ADMIN = "adm_page_test_token_0123456789"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flow:
    """The running product (web + worker), the simulator, and a browser page."""

    def __init__(self, sim: SimServer, base: str, page: Page, tenant_id: str, token: str, account_id: str):
        self.sim, self.base, self.page, self.tenant_id, self.token, self.account_id = sim, base, page, tenant_id, token, account_id
        self.step = 0

    async def shot(self, name: str) -> None:
        self.step += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{self.step:02d}-{name}.png"), full_page=True)

    async def test_key(self, key: str) -> None:
        await self.page.get_by_label("Restricted key (rk_test_… or rk_live_…)").fill(key)
        await self.page.get_by_role("button", name="Test", exact=True).click()


@pytest.fixture
async def flow(make_settings: Callable[..., Settings]) -> AsyncIterator[Flow]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    master = generate_master_key("page")
    async with SimServer(seed=99) as sim:
        account = sim.create_account(customers=12, months=12)
        sim.set_rate_limit(account.id, 500)
        settings = make_settings().model_copy(update={
            "vault": VaultSettings(master_keys=master),  # type: ignore[arg-type]
            "control": ControlSettings(admin_token=ADMIN),  # type: ignore[arg-type]
            "http": HttpSettings(port=port, public_base_url=base),
            "stripe": StripeSettings(api_base=sim.base_url, test_requests_per_second=200, test_limit_per_second=500, retry_attempts=2,
                                     retry_initial_wait_s=0.05, retry_max_wait_s=0.2),
            "poller": PollerSettings(interval_s=1, unverified_interval_s=1),
            "importer": ImporterSettings(scan_interval_s=0.5, reconcile_projected_wait_s=1),
        })
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        await admin.create_topics([NewTopic(settings.kafka.raw_topic, 2, 1)])
        await admin.close()
        server = TestServer(build_web_app(settings), host="127.0.0.1", port=port)
        await server.start_server()
        stop = asyncio.Event()
        async with open_worker(settings, MasterKeyring.from_setting(master)) as worker, aiohttp.ClientSession() as http:
            tasks = [asyncio.create_task(worker.poller.run_forever(stop)), asyncio.create_task(worker.importer.run_forever(stop))]
            async with http.post(f"{base}/api/tenants", json={"name": "Page Co"},
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                tenant = await resp.json()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1000, "height": 900})
                try:
                    yield Flow(sim, base, page, tenant["tenant_id"], tenant["api_token"], account.id)
                finally:
                    await browser.close()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()


async def test_the_whole_connection_flow_in_a_browser(flow: Flow) -> None:
    page, sim = flow.page, flow.sim
    await page.goto(f"{flow.base}/#tenant={flow.tenant_id}&token={flow.token}")
    await expect(page.get_by_text("Page Co")).to_be_visible()
    assert flow.token not in page.url  # the login token leaves the address bar at once
    await flow.shot("signed-in")

    await flow.test_key("hello there")
    await expect(page.locator("#key-error")).to_contain_text("not a Stripe")
    await flow.shot("bad-key")

    await flow.test_key(sim.secret_key(flow.account_id))
    await expect(page.locator("#key-error")).to_contain_text("restricted key")
    await expect(page.locator("#key-error")).to_contain_text("Read")
    await flow.shot("secret-key-refused")

    partial = sim.create_restricted_key(flow.account_id, permissions={"customers", "subscriptions", "invoices",
                                                                      "payment_intents", "events", "coupons"})
    await flow.test_key(partial)
    await expect(page.locator("#verdict-summary")).to_contain_text("cannot read Charges")
    await expect(page.locator("#verdict-list li.bad")).to_have_count(1)
    await expect(page.get_by_role("button", name="Connect")).to_be_disabled()
    await flow.shot("permission-missing")

    good = sim.create_restricted_key(flow.account_id)
    await flow.test_key(good)
    await expect(page.locator("#verdict-summary")).to_contain_text("can read everything")
    await expect(page.locator("#verdict-list li.ok")).to_have_count(7)
    await flow.shot("green")
    await page.get_by_role("button", name="Connect").click()
    webhook_url = page.get_by_label("Endpoint URL")
    await expect(webhook_url).not_to_have_value("", timeout=10_000)
    await flow.shot("connected")

    endpoint_id, secret = sim.add_webhook_endpoint(flow.account_id, await webhook_url.input_value())
    await page.get_by_label("Signing secret (whsec_…)").fill(secret)
    await page.get_by_role("button", name="Save secret").click()
    await expect(page.locator("#secret-hints")).to_contain_text("whsec_…")
    sim.send_test_webhook(endpoint_id)
    await expect(page.locator("#quick-test")).to_contain_text("Test delivery received", timeout=15_000)
    await flow.shot("quick-test-received")

    await expect(page.locator("#import-state")).to_have_text("Import complete.", timeout=60_000)
    await expect(page.locator("#overall-bar")).to_have_attribute("value", "100")
    await flow.shot("import-done")

    # Check against Stripe: the result is a table a screen reader reads (no projector runs in this test,
    # so the tables hold nothing yet and the check says what differs).
    await page.get_by_role("button", name="Check now").click()
    await expect(page.locator("#reconcile-summary")).to_contain_text("Stripe", timeout=30_000)
    await expect(page.locator("#reconcile-summary")).not_to_contain_text("Checking", timeout=30_000)
    await expect(page.get_by_role("table", name="Stripe against the revenue tables")).to_be_visible()
    await expect(page.locator("#reconcile-rows tr").first).to_contain_text("customers")
    await expect(page.locator("#reconcile-rows tr").nth(1)).to_contain_text("missing here: ch_")
    await flow.shot("check-against-stripe")

    sim.revoke_key(good)
    await expect(page.locator("#status-title")).to_have_text("Key rotated or revoked", timeout=30_000)
    await expect(page.locator("#recovery-steps li").first).to_contain_text("Create a fresh restricted key")
    await flow.shot("key-revoked")

    fresh = sim.create_restricted_key(flow.account_id)
    await flow.test_key(fresh)
    await expect(page.locator("#verdict-summary")).to_contain_text("can read everything")
    await page.get_by_role("button", name="Replace the stored key").click()
    await expect(page.locator("#status-title")).not_to_have_text("Key rotated or revoked", timeout=15_000)
    await expect(page.locator("#key-hint")).to_contain_text(fresh[-4:])
    await flow.shot("green-again")

    # A new webhook URL, the old one no longer anyone's (someone holding it could spend the connection's share).
    old_url = await webhook_url.input_value()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="New URL").click()
    await expect(page.locator("#copy-note")).to_contain_text("paste it into the endpoint in Stripe")
    new_url = await webhook_url.input_value()
    assert new_url != old_url and new_url.rsplit("/", 1)[0] == old_url.rsplit("/", 1)[0]
    await flow.shot("new-webhook-url")


async def test_the_page_is_keyboard_usable_and_readable_at_phone_width(flow: Flow) -> None:
    page = flow.page
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.goto(f"{flow.base}/")
    await page.keyboard.press("Tab")
    await page.keyboard.type(flow.tenant_id)
    await page.keyboard.press("Tab")
    await page.keyboard.type(flow.token)
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("Page Co")).to_be_visible()
    await page.get_by_label("Restricted key (rk_test_… or rk_live_…)").focus()
    await page.keyboard.type("sk_test_" + "x" * 30)
    await page.keyboard.press("Enter")  # submits the key form: Test
    await expect(page.locator("#key-error")).to_contain_text("restricted key")
    overflow: Any = await page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375, "the page scrolls sideways at phone width"
    unlabeled = await page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels || e.labels.length === 0).map(e => e.id)")
    assert unlabeled == []
    await flow.shot("phone-width")
