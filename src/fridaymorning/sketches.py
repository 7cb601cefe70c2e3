"""Latency sketches (DDSketch) as compact bytes, merged, and read as the quantiles fm shows.

ddsketch 3.x has no public serialisation short of protobuf, so this module reads the sketch's private
state (`_mapping`, `_store`, `_negative_store`, `_zero_count`, `_count`, `_sum`, `_min`, `_max`) and the
public fields of its `DenseStore`s (`bins`, `offset`, `min_key`, `max_key`, `count`). A test pins the
roundtrip, so an upgrade of ddsketch that changes them fails loudly.

The encoding, little-endian::

    header   B  format version (1)
             d  relative accuracy          (the mapping is LogarithmicMapping(accuracy), offset 0)
             5d zero count, count, sum, min, max
    store    twice, positive then negative:
             B  bin encoding: 0 empty, 1 uint32 counts, 2 float64 counts
             i  key of the first bin, I number of bins, d the store's count
             n  counts of the bins from the lowest to the highest non-empty key

Counts are integers in practice (one per request), so most bins take 4 bytes; a sketch of one second of
traffic between 1 ms and 10 s takes well under 2 kB.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from itertools import chain
from typing import Any

import numpy as np
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from fridaymorning.models import LatencySketch, new_sketch

_FORMAT_VERSION = 1
_HEADER = struct.Struct("<B6d")
_STORE_HEADER = struct.Struct("<BiId")
_EMPTY, _UINT32, _FLOAT64 = 0, 1, 2
_UINT32_LIMIT = 2**32


def sketch_to_bytes(sketch: DDSketch) -> bytes:
    """Encode a DDSketch (as made by `models.new_sketch` or `DDSketch(accuracy)`) into bytes.

    Raises ValueError for a sketch whose mapping cannot be rebuilt from its accuracy alone.
    """
    mapping = sketch._mapping
    if type(mapping) is not LogarithmicMapping or mapping._offset != 0:
        raise ValueError(f"only DDSketch's default LogarithmicMapping is supported, got {mapping!r}")
    header = _HEADER.pack(
        _FORMAT_VERSION,
        mapping.relative_accuracy,
        sketch._zero_count,
        sketch._count,
        sketch._sum,
        sketch._min,
        sketch._max,
    )
    return header + _store_to_bytes(sketch._store) + _store_to_bytes(sketch._negative_store)


def sketch_from_bytes(blob: bytes) -> LatencySketch:
    """Decode bytes made by `sketch_to_bytes`; the result answers every quantile exactly as the original.

    Raises ValueError when the bytes are not such an encoding.
    """
    try:
        version, accuracy, zero_count, count, total, minimum, maximum = _HEADER.unpack_from(blob, 0)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unknown sketch encoding version {version}")
        sketch = LatencySketch(accuracy)
        position = _HEADER.size
        sketch._store, position = _store_from_bytes(blob, position)
        sketch._negative_store, position = _store_from_bytes(blob, position)
    except struct.error as error:
        raise ValueError(f"truncated or corrupt sketch: {error}") from error
    if position != len(blob):
        raise ValueError(f"{len(blob) - position} unexpected bytes after the sketch")
    sketch._zero_count = zero_count
    sketch._count = count
    sketch._sum = total
    sketch._min = minimum
    sketch._max = maximum
    return sketch


# The quantiles the API and the dashboard show, as p50, p90 and p99.
SHOWN_QUANTILES = (0.5, 0.9, 0.99)


def shown_quantiles(sketch: DDSketch) -> dict[str, float | None]:
    """{"p50": …, "p90": …, "p99": …} of `sketch`, in its unit; None each for an empty sketch."""
    return {f"p{round(q * 100)}": sketch.get_quantile_value(q) for q in SHOWN_QUANTILES}


def merge_sketches(sketches: Iterable[DDSketch]) -> LatencySketch:
    """A new sketch holding the values of all `sketches` (which are left unchanged).

    Bins are summed with numpy rather than by `DDSketch.merge`, which loops over bins in Python:
    an hour of one-second sketches merges in a few milliseconds. The result is the sketch `merge`
    would build (same bins, counts, sum, min and max). Raises ValueError if relative accuracies differ.
    """
    merged = new_sketch()
    accuracy = merged._mapping.relative_accuracy
    sketches = list(sketches)
    for sketch in sketches:
        if type(sketch._mapping) is not LogarithmicMapping or sketch._mapping.relative_accuracy != accuracy:
            raise ValueError("cannot merge sketches of different relative accuracies")
    sketches = [sketch for sketch in sketches if sketch._count]
    if not sketches:
        return merged
    merged._store = _summed_store([sketch._store for sketch in sketches])
    merged._negative_store = _summed_store([sketch._negative_store for sketch in sketches])
    merged._zero_count = float(sum(sketch._zero_count for sketch in sketches))
    merged._count = float(sum(sketch._count for sketch in sketches))
    merged._sum = float(sum(sketch._sum for sketch in sketches))
    merged._min = min(sketch._min for sketch in sketches)
    merged._max = max(sketch._max for sketch in sketches)
    return merged


def _summed_store(stores: list[DenseStore]) -> DenseStore:
    """One DenseStore whose bins are the sums of the stores' bins."""
    filled = [store for store in stores if store.count]
    merged = DenseStore()
    if not filled:
        return merged
    low = min(store.min_key for store in filled)
    high = max(store.max_key for store in filled)
    # Whole bin lists (no slicing, which would copy them once more): bins outside [min_key, max_key]
    # are zeros, so they add nothing.
    base = min(store.offset for store in filled)
    lengths = np.fromiter((len(store.bins) for store in filled), dtype=np.int64, count=len(filled))
    starts = np.fromiter((store.offset - base for store in filled), dtype=np.int64, count=len(filled))
    counts = np.fromiter(chain.from_iterable(store.bins for store in filled), dtype=np.float64)
    ends = np.cumsum(lengths)
    # Position of every bin in the merged range: its store's start plus its rank within the store.
    positions = np.arange(counts.size) + np.repeat(starts - (ends - lengths), lengths)
    totals = np.bincount(positions, weights=counts)[low - base : high - base + 1]
    merged.bins = totals.tolist()
    merged.offset = low
    merged.min_key = low
    merged.max_key = high
    merged.count = float(sum(store.count for store in filled))
    return merged


def _store_to_bytes(store: DenseStore) -> bytes:
    """One store as its header plus the counts of its bins from min_key to max_key."""
    if store.count == 0:
        return _STORE_HEADER.pack(_EMPTY, 0, 0, 0.0)
    first = store.min_key - store.offset
    counts = store.bins[first : store.max_key - store.offset + 1]
    integral = all(count.is_integer() and 0 <= count < _UINT32_LIMIT for count in map(float, counts))
    encoding = _UINT32 if integral else _FLOAT64
    packed = array("I", map(int, counts)) if integral else array("d", counts)
    if packed.itemsize != (4 if integral else 8):
        raise RuntimeError("this platform's array item sizes differ from the encoding")
    header = _STORE_HEADER.pack(encoding, store.min_key, len(counts), float(store.count))
    return header + _little_endian(packed).tobytes()


def _store_from_bytes(blob: bytes, position: int) -> tuple[DenseStore, int]:
    """The store encoded at `position`, and the position just after it."""
    encoding, min_key, length, count = _STORE_HEADER.unpack_from(blob, position)
    position += _STORE_HEADER.size
    store = DenseStore()
    if encoding == _EMPTY:
        return store, position
    if encoding not in (_UINT32, _FLOAT64):
        raise ValueError(f"unknown bin encoding {encoding}")
    counts = array("I" if encoding == _UINT32 else "d")
    end = position + length * counts.itemsize
    if end > len(blob):
        raise ValueError("truncated sketch bins")
    counts.frombytes(blob[position:end])
    store.bins = [float(value) for value in _little_endian(counts)]
    store.offset = min_key
    store.min_key = min_key
    store.max_key = min_key + length - 1
    store.count = count
    return store, end


def _little_endian(values: array[Any]) -> array[Any]:
    """`values` in little-endian byte order (a copy on big-endian machines)."""
    if sys.byteorder == "little":
        return values
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped


def cumulative_counts(sketch: DDSketch, bounds: Iterable[float]) -> list[float]:
    """How many values of `sketch` lie at or below each bound (positive, in the sketch's unit).

    This is a histogram's cumulative buckets read off the sketch's bins. A bin that straddles a bound
    counts wholly below it, so a bucket can hold values up to one bin width (2% at the project's 1%
    relative accuracy) above its bound; every value at or below it is counted.
    """
    below = float(sketch._zero_count + sketch._negative_store.count)
    store = sketch._store
    running = np.cumsum(store.bins) if store.count else np.zeros(0)
    counts = []
    for bound in bounds:
        index = sketch._mapping.key(bound) - store.offset
        if index < 0 or running.size == 0:
            counts.append(below)
        else:
            counts.append(below + float(running[min(index, running.size - 1)]))
    return counts
