"""A small in-process cache of serialised exposure records, so that a record polled hundreds of times a
second is built once per change.

The key holds everything the body depends on: the exposure id, its ``revision`` (bumped by every
update of the row, :class:`obsqc.service.store.ExposureRow`), the names of its plots (drawn after the
verdict, without touching the row) and the base URL its links are built from. A stale entry can
therefore never be served; checking the key costs one primary-key lookup of a single integer instead
of loading the row and its per-CCD rows and serialising them (measured: 2.6 ms for a 62-CCD exposure
against ~0.2 ms).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RecordCache"]


class RecordCache:
    """Least-recently-used map of key -> serialised body, safe to share between request threads."""

    def __init__(self, max_entries: int = 1024):
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            body = self._entries.get(key)
            if body is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return body

    def put(self, key: Hashable, body: bytes) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries[key] = body
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
