"""The projector's Prometheus series: what it applied, skipped and dead-lettered, how long a batch took, and how far
behind each partition and each tenant is."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TENANT_LAG_TTL_S = 600.0


class ProjectorMetrics:
    """Prometheus series of the projector."""

    def __init__(self, registry: CollectorRegistry):
        self.applied = Counter("projector_events_applied", "Events applied to the tables", registry=registry)
        self.duplicates = Counter("projector_duplicates_skipped", "Events already applied before", registry=registry)
        self.dead_letters = Counter("projector_dead_letters",
                                    "Records dead-lettered, counted as each is sent (or skipped in a replay): a "
                                    "record again if its batch is retried (the tenant's health counts it once)",
                                    ["reason"], registry=registry)
        self.batch_seconds = Histogram("projector_batch_apply_seconds", "Time to apply one batch", registry=registry)
        self.event_age = Histogram(
            "projector_event_age_seconds", "From receipt by a producer to applied", registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.lag = Gauge("projector_consumer_lag", "Records not yet applied", ["partition"], registry=registry)
        # One series per tenant (thousands are fine for Prometheus): who is behind, when the total is not. A series
        # this member has not updated for TENANT_LAG_TTL_S is removed (a quiet tenant, or partitions now another
        # member's), so the gauges hold what this member applied lately, not a past backlog for ever.
        self.tenant_lag = Gauge("projector_tenant_lag_seconds", "Age of the tenant's oldest event in its latest "
                                "applied batch (receipt to applied)", ["tenant"], registry=registry)
        self._tenant_lag_at: dict[str, float] = {}
        self._expired_at = time.monotonic()
        self.dedupe_pruned = Counter("projector_dedupe_rows_pruned", "Dedupe rows deleted for age (processed_events)",
                                     registry=registry)

    def tenant_lagged(self, tenant: str, age_s: float) -> None:
        """Sets one tenant's lag; now and then drops the series not set for TENANT_LAG_TTL_S."""
        now = time.monotonic()
        self.tenant_lag.labels(tenant).set(age_s)
        self._tenant_lag_at[tenant] = now
        if now - self._expired_at >= 60:
            self._expired_at = now
            for stale in [t for t, at in self._tenant_lag_at.items() if now - at > TENANT_LAG_TTL_S]:
                del self._tenant_lag_at[stale]
                self.tenant_lag.remove(stale)
