"""Import progress as a user reads it (pure): share of the window covered, objects per second over the
current pass, and a time left that follows from them — or nothing, rather than a made-up figure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ingestor.connections.views import import_progress_json
from ingestor.sources.checkpoints import ImportCheckpoint

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
WINDOW = (1_700_000_000, 1_700_000_000 + 1000)


def _checkpoint(resource: str, published: int, covered_s: int | None, pass_s: float | None, at_start: int = 0,
                done: bool = False, paused: str | None = None) -> ImportCheckpoint:
    return ImportCheckpoint(
        "conn", resource, "run", "connect", *WINDOW, None, None, published, done, paused, covered_s,
        T0 if pass_s is not None else None, at_start, T0 + timedelta(seconds=pass_s or 0))


def test_speed_and_time_left_follow_from_the_pass() -> None:
    progress = import_progress_json([
        _checkpoint("charges", 3000, covered_s=250, pass_s=10.0),  # 300/s; a quarter done: ~9,000 left
        _checkpoint("customers", 1000, covered_s=500, pass_s=10.0, at_start=500),  # 50/s; half: ~1,000 left
    ])
    assert progress["state"] == "running"
    assert progress["resources"]["charges"]["objects_per_s"] == 300.0
    assert progress["resources"]["charges"]["eta_s"] == 30  # 9,000 ÷ 300
    assert progress["resources"]["customers"]["objects_per_s"] == 50.0
    assert progress["objects_per_s"] == 350.0 and progress["eta_s"] == round(10_000 / 350)
    assert progress["covered"] == 0.25


def test_nothing_is_made_up_before_it_is_known() -> None:
    fresh = import_progress_json([_checkpoint("charges", 0, covered_s=None, pass_s=None)])
    assert fresh["objects_per_s"] is None and fresh["eta_s"] is None and fresh["covered"] == 0.0
    under_a_second = import_progress_json([_checkpoint("charges", 100, covered_s=100, pass_s=0.5)])
    assert under_a_second["objects_per_s"] is None and under_a_second["eta_s"] is None


def test_a_finished_import_has_no_time_left_and_a_paused_one_no_estimate() -> None:
    done = import_progress_json([_checkpoint("charges", 500, covered_s=1000, pass_s=5.0, done=True)])
    assert done["state"] == "done" and done["eta_s"] == 0 and done["covered"] == 1.0
    paused = import_progress_json([_checkpoint("charges", 500, covered_s=500, pass_s=5.0, paused="key_invalid")])
    assert paused["state"] == "paused" and paused["eta_s"] is None
