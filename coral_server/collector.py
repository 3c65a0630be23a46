"""The garbage collector's setting for the server process: what start-up made is frozen, young
objects are collected in larger batches.

The server allocates in bursts (a scheduled fire of thousands of runs makes tens of short-lived
objects a run: events, futures, tasks, rows). CPython's default collects the young generation every
700 allocations and the whole heap every hundred of those when enough survived; in a burst of
10,000 runs that was a fifth of the time (`bench/README.md`). Reference counting frees almost all
of these objects anyway: the collector is only for cycles, which a larger batch finds as well.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("coral_server.collector")

YOUNG = 50_000  # allocations between young collections (CPython's default: 700)


def tune() -> None:
    """Freeze what exists now (start-up: modules, settings, the app; never scanned again) and collect
    young objects every `YOUNG` allocations (the older generations keep their ratios)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
    log.info("server.collector young=%s frozen=%s", YOUNG, gc.get_freeze_count())
