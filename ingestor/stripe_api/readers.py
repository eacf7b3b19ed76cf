"""Builds `StripeReader`s from settings, all drawing on the request budget of their Stripe account.

The budget is keyed by connection (one Stripe account in one mode) and shared by every process through
Postgres (`request_budget.py`), so the poller, the importer, key re-tests and reconciles of one account
never overrun Stripe's limit together; a key tested before it has a connection (a handful of requests)
gets a budget of its own Test, kept nowhere. Key tests use a short retry policy so the user gets an answer in seconds; the poller
and the importer use the patient one from the settings.
"""

from __future__ import annotations

import asyncpg

from ingestor.stripe_api.client import RetryPolicy, StripeReader
from ingestor.stripe_api.request_budget import Priority, Rate, RateBudgets
from plumbing.settings import StripeSettings

KEY_TEST_RETRY = RetryPolicy(attempts=2, initial_wait_s=0.2, max_wait_s=1.0)


class StripeReaders:
    """Makes readers for one restricted key within the shared budget of its account."""

    def __init__(self, settings: StripeSettings, budgets: RateBudgets | None = None, pool: asyncpg.Pool | None = None):
        self._settings = settings
        self.budgets = budgets or RateBudgets(
            Rate(settings.test_requests_per_second, settings.test_limit_per_second),
            Rate(settings.live_requests_per_second, settings.live_limit_per_second),
            Rate(settings.endpoint_requests_per_second, settings.endpoint_limit_per_second), pool)
        self._patient = RetryPolicy(settings.retry_attempts, settings.retry_initial_wait_s, settings.retry_max_wait_s)

    def reader(self, key: str, budget_id: str | None, livemode: bool, quick: bool = False,
               priority: Priority = Priority.INTERACTIVE) -> StripeReader:
        """Returns a reader (the caller closes it); `budget_id` None for a key without a connection; `quick` for
        key tests; BULK priority for the importer."""
        budget = (self.budgets.for_unconnected_key(livemode) if budget_id is None
                  else self.budgets.for_account(budget_id, livemode))
        return StripeReader(
            key,
            budget,
            api_base=self._settings.api_base,
            retry=KEY_TEST_RETRY if quick else self._patient,
            timeout_s=self._settings.timeout_s,
            priority=priority,
        )

