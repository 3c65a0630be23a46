"""The server process's collector setting: start-up frozen, young objects collected in batches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from coral_server import collector


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_freezes_what_exists_and_batches_young_collections(restored: None) -> None:
    _, middle, old = gc.get_threshold()
    collector.tune()
    assert gc.get_threshold() == (collector.YOUNG, middle, old)
    assert gc.get_freeze_count() > 1000  # this process's modules and objects, never scanned again
