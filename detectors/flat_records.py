"""Records of one order kept end to end in one tuple, each `width` fields, the first its key.

An order usually has one waybill or one ship request: a tuple of its fields costs a
fraction of a dict per order holding a record per key (memory per open order, issue #8).
"""

from __future__ import annotations

from typing import Any


def find(records: tuple[Any, ...], key: Any, width: int) -> int:
    """Where the record keyed `key` starts in `records`, or -1."""
    for i in range(0, len(records), width):
        if records[i] == key:
            return i
    return -1


def put(records: tuple[Any, ...], at: int, record: tuple[Any, ...]) -> tuple[Any, ...]:
    """`records` with `record` in place of the one starting at `at` (-1: added at the end)."""
    if at < 0:
        return (*records, *record)
    return (*records[:at], *record, *records[at + len(record):])
