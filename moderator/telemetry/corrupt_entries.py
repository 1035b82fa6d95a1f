"""Reading entries other code (or another version, or an operator by hand) wrote into Redis.

A value that does not decode is a miss, never an exception: one foreign value under a score key
would otherwise fail the lookup of the whole batch it was fetched with. Each unreadable entry is
counted per kind (``moderator_corrupt_cache_entries_total{kind}``, per process) and logged the
first time its key is read, not on every read after.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_LOGGED_KEYS = 10_000  # bounds the memory of "already logged" under a flood of bad keys

_counts: Counter[str] = Counter()
_logged: set[str] = set()


def decode_or_miss(raw: bytes | str, parse: Callable[[bytes | str], T], kind: str, key: str) -> T | None:
    """``parse(raw)``, or None (counted, logged once per key) when ``raw`` is not a valid entry.

    ``parse`` signals a bad entry with ValueError or TypeError (orjson's and pydantic's errors are
    ValueErrors).
    """
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        _counts[kind] += 1
        if key not in _logged and len(_logged) < _MAX_LOGGED_KEYS:
            _logged.add(key)
            log.warning("unreadable %s entry %s treated as a miss: %s", kind, key, str(exc)[:200])
        return None


class CorruptEntriesCollector(Collector):
    """Exposes the process's unreadable-entry counts in a service's own registry."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("moderator_corrupt_cache_entries", "Redis entries that could not be "
                                     "decoded and were treated as misses, by kind.", labels=["kind"])
        for kind, count in sorted(_counts.items()):
            family.add_metric([kind], count)
        yield family
