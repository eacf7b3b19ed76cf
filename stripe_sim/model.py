"""In-memory state: accounts, keys and per-mode object stores with their version history and events.

Objects are plain Stripe-shaped dicts. A stored dict is never mutated after it is stored: an update
stores a new dict, so an event's `data.object` keeps the state *at* that event and the version history
(read by `ground_truth`) is a list of references, not copies.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from stripe_sim.clock import SimClock
from stripe_sim.ids import new_id

Obj = dict[str, Any]
EventListener = Callable[["Account", bool, Obj], None]

# The resources the read API serves, mapped to their object kind.
RESOURCES = ("customers", "charges", "subscriptions", "invoices", "payment_intents", "events", "coupons", "prices")


@dataclass
class ApiKey:
    """One API key: secret (`sk_…`) or restricted (`rk_…`) with per-resource read permissions."""

    key: str
    account_id: str
    livemode: bool
    restricted: bool
    permissions: frozenset[str]
    expired: bool = False
    # Requests it still serves before it expires (None: no end), for a revocation at a set point of a run.
    requests_left: int | None = None


class Store:
    """One account's objects in one mode (test or live), with lists kept newest first."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Obj]] = {}
        self.versions: dict[str, list[tuple[int, Obj]]] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._sorted: dict[str, list[Obj]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._dirty: set[str] = set()
        self._grouped: dict[tuple[str, str], dict[object, list[Obj]]] = {}

    def insert(self, kind: str, obj: Obj, at: int) -> Obj:
        """Store a new object and start its version history."""
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        self.versions[obj["id"]] = [(at, obj)]
        self._seq[obj["id"]] = self._next_seq
        self._next_seq += 1
        self._dirty.add(kind)
        self._forget_groups(kind)
        return obj

    def update(self, kind: str, obj_id: str, changes: Obj, at: int) -> tuple[Obj, Obj]:
        """Store a changed copy of an object; return it and the previous values of changed keys."""
        old = self.objects[kind][obj_id]
        previous = {k: old.get(k) for k, v in changes.items() if old.get(k) != v}
        new = {**old, **changes}
        self.objects[kind][obj_id] = new
        self.versions[obj_id].append((at, new))
        if kind in self._sorted and kind not in self._dirty:  # a dirty index is rebuilt on the next read
            self._sorted[kind][self._index[kind][obj_id]] = new
        self._forget_groups(kind)
        return new, previous

    def remove(self, kind: str, obj_id: str) -> None:
        """Delete an object for good, as Stripe deletes a draft invoice or a plan: no longer listed or found, so a
        list whose `starting_after` names it is refused (400 `resource_missing`, `param: starting_after`). Its
        versions stay (the history of what was)."""
        del self.objects[kind][obj_id]
        self._dirty.add(kind)
        self._forget_groups(kind)

    def get(self, kind: str, obj_id: str) -> Obj | None:
        """Return the current state of one object, or None."""
        return self.objects.get(kind, {}).get(obj_id)

    def all(self, kind: str) -> list[Obj]:
        """Return every object of a kind, newest first (created, then insertion order)."""
        if kind in self._dirty or kind not in self._sorted:
            objs = list(self.objects.get(kind, {}).values())
            objs.sort(key=lambda o: (o["created"], self._seq[o["id"]]), reverse=True)
            self._sorted[kind] = objs
            self._index[kind] = {o["id"]: i for i, o in enumerate(objs)}
            self._dirty.discard(kind)
        return self._sorted[kind]

    def prepare(self, groups: tuple[tuple[str, str], ...] = ()) -> None:
        """Build every kind's newest-first index, and the `groups` (kind, field) indexes, now: built by a
        first list instead, a large account's took the server a few hundred milliseconds while requests
        queued, and the rate limiter then saw them arrive together."""
        for kind in list(self.objects):
            self.all(kind)
        for kind, field in groups:
            self.grouped(kind, field, None)

    def grouped(self, kind: str, field: str, value: object) -> list[Obj]:
        """Return the objects of a kind whose `field` is `value`, newest first (e.g. a charge's refunds): an
        index built on first use (or by `prepare`, as an account is created) and dropped when an object of the
        kind changes, so a page of 100 charges does not scan every refund 100 times."""
        groups = self._grouped.get((kind, field))
        if groups is None:
            groups = {}
            for obj in self.all(kind):
                groups.setdefault(obj.get(field), []).append(obj)
            self._grouped[(kind, field)] = groups
        return groups.get(value, [])

    def _forget_groups(self, kind: str) -> None:
        for key in [k for k in self._grouped if k[0] == kind]:
            del self._grouped[key]

    def position(self, kind: str, obj_id: str) -> int | None:
        """Return an object's index in `all(kind)`, or None if it is not there."""
        self.all(kind)
        return self._index[kind].get(obj_id)

    def state_at(self, obj_id: str, at: int) -> Obj | None:
        """Return an object's state as it stood at time `at` (None if it did not exist yet)."""
        found = None
        for t, obj in self.versions.get(obj_id, []):
            if t > at:
                break
            found = obj
        return found


@dataclass
class Account:
    """One Stripe account (one tenant): its API version, keys and a store per mode."""

    id: str
    api_version: str
    rng: random.Random
    test: Store = field(default_factory=Store)
    live: Store = field(default_factory=Store)
    keys: list[str] = field(default_factory=list)
    name: str = ""

    def store(self, livemode: bool) -> Store:
        """Return the store for live or test mode."""
        return self.live if livemode else self.test


class SimState:
    """Everything the simulator knows: accounts, keys, request counters and event listeners."""

    def __init__(self, clock: SimClock, seed: int = 0) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKey] = {}
        self.listeners: list[EventListener] = []
        self.request_counts: dict[str, Counter[str]] = {}
        self.request_log: dict[str, list[tuple[str, str, int]]] = {}

    def add_account(self, api_version: str, seed: int | None = None, name: str = "") -> Account:
        """Create an empty account with one test and one live secret key."""
        acct_seed = self.rng.getrandbits(64) if seed is None else seed
        rng = random.Random(acct_seed)
        account = Account(id=new_id(rng, "acct"), api_version=api_version, rng=rng, name=name)
        if account.id in self.accounts:
            raise ValueError(f"an account with seed {acct_seed} already exists: {account.id}")
        self.accounts[account.id] = account
        for livemode in (False, True):
            self.add_key(account.id, livemode, restricted=False, permissions=frozenset(RESOURCES))
        return account

    def add_key(self, account_id: str, livemode: bool, restricted: bool,
                permissions: frozenset[str]) -> ApiKey:
        """Issue a new key for an account."""
        account = self.accounts[account_id]
        prefix = ("rk_" if restricted else "sk_") + ("live" if livemode else "test")
        key = ApiKey(new_id(account.rng, prefix), account_id, livemode, restricted, permissions)
        self.keys[key.key] = key
        account.keys.append(key.key)
        return key

    def secret_key(self, account_id: str, livemode: bool = False) -> str:
        """Return the account's first unexpired secret key for the mode."""
        for k in self.accounts[account_id].keys:
            key = self.keys[k]
            if not key.restricted and key.livemode == livemode and not key.expired:
                return k
        return self.add_key(account_id, livemode, False, frozenset(RESOURCES)).key

    def publish(self, account: Account, livemode: bool, event: Obj) -> None:
        """Hand a freshly emitted event to every listener (webhook dispatch)."""
        for listener in self.listeners:
            listener(account, livemode, event)

    def count_request(self, account_id: str, method: str, path_qs: str, status: int) -> None:
        """Record one API request against an account."""
        self.request_counts.setdefault(account_id, Counter())[f"{method} {path_qs}"] += 1
        self.request_log.setdefault(account_id, []).append((method, path_qs, status))
