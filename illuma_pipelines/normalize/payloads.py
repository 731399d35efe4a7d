"""Raw JSON payloads -> normalized orders, one record at a time.

Parsing a whole extract into dicts first and normalizing the list afterwards keeps every parsed
record alive at once: a 20,000-order Amazon batch is about a gigabyte of dicts, and the cyclic
garbage collector re-walks them on every full collection (it tripled the parse time in the
issue 4 benchmark). Here each payload is parsed and normalized before the next one is read, so
only the normalized rows accumulate.

The cyclic garbage collector is also paused while a batch runs. Parsed JSON and normalized rows
hold no reference cycles, so refcounting frees everything as before; but the loop allocates
hundreds of containers per record, and each full collection those allocations trigger walks
every object in the process (a Dagster worker holds a few hundred thousand): measured, that
was a quarter of the normalizing time of a 20,000-order batch.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from types import ModuleType

from . import amazon, ebay, walmart
from .model import NormalizeResult
from .money import loads

__all__ = ["normalize_order_payloads", "paused_gc"]

_ORDER_NORMALIZERS: dict[str, ModuleType] = {"amazon": amazon, "ebay": ebay, "walmart": walmart}


def normalize_order_payloads(channel: str, payloads: Iterable[str | bytes]) -> NormalizeResult:
    """Normalize the order records of ``channel`` given as raw JSON texts (one record each).

    Same result as ``<channel>.normalize_orders([loads(p) for p in payloads])``, rejects keyed by
    the same positions, with exact decimals; a payload that is not JSON at all raises, as
    ``loads`` does.
    """
    module = _ORDER_NORMALIZERS.get(channel)
    if module is None:
        raise ValueError(
            f"no order normalizer for channel {channel!r}; known: {', '.join(_ORDER_NORMALIZERS)}"
        )
    with paused_gc():
        return module.normalize_orders(loads(payload) for payload in payloads)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause automatic cyclic garbage collection for an allocation-heavy loop that makes no
    reference cycles; it resumes afterwards if it was on (concurrent users at worst resume it
    early, never leave it off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
