"""DDSketch to bytes and back, and merging."""

from __future__ import annotations

import random

import pytest
from ddsketch import DDSketch

from fridaymorning.models import new_sketch
from fridaymorning.sketches import merge_sketches, sketch_from_bytes, sketch_to_bytes

QUANTILES = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0]


def assert_same_sketch(left: DDSketch, right: DDSketch) -> None:
    assert [left.get_quantile_value(q) for q in QUANTILES] == [right.get_quantile_value(q) for q in QUANTILES]
    assert (left.count, left.sum, left._min, left._max, left._zero_count) == (
        right.count,
        right.sum,
        right._min,
        right._max,
        right._zero_count,
    )


def latency_sketch(seed: int, size: int = 5000) -> DDSketch:
    generator = random.Random(seed)
    sketch = new_sketch()
    for _ in range(size):
        sketch.add(round(generator.lognormvariate(3, 1.2)))
    return sketch


def test_roundtrip_keeps_every_quantile_and_statistic() -> None:
    """Decoding the bytes gives back the same quantiles, count, sum, min, max and zero count."""
    sketch = latency_sketch(1)
    sketch.add(0)
    restored = sketch_from_bytes(sketch_to_bytes(sketch))
    assert_same_sketch(restored, sketch)


def test_roundtrip_is_stable_and_compact() -> None:
    """Re-encoding a decoded sketch gives the same bytes; integer counts take 4 bytes per bin."""
    sketch = latency_sketch(2)
    blob = sketch_to_bytes(sketch)
    assert sketch_to_bytes(sketch_from_bytes(blob)) == blob
    assert len(blob) < 4 * sketch._store.length() + 100


def test_roundtrip_of_negative_fractional_and_weighted_values() -> None:
    """Negative values, fractions and non-integer weights (float64 bins) survive the roundtrip."""
    sketch = new_sketch()
    for value in (-3.5, -0.25, 0.0, 0.001, 2.5, 1e6):
        sketch.add(value)
    sketch.add(7.0, weight=2.5)
    assert_same_sketch(sketch_from_bytes(sketch_to_bytes(sketch)), sketch)


def test_empty_sketch_roundtrips() -> None:
    """An empty sketch decodes to an empty sketch with no quantiles."""
    restored = sketch_from_bytes(sketch_to_bytes(new_sketch()))
    assert restored.count == 0
    assert restored.get_quantile_value(0.5) is None


def test_decoded_sketch_keeps_working() -> None:
    """A decoded sketch accepts new values below and above its range and merges like the original."""
    original = latency_sketch(3, 500)
    restored = sketch_from_bytes(sketch_to_bytes(original))
    for sketch in (original, restored):
        sketch.add(0.01)
        sketch.add(1e7)
        sketch.merge(latency_sketch(4, 500))
    assert_same_sketch(restored, original)


def test_merge_sketches_equals_adding_everything_to_one() -> None:
    """merge_sketches gives the sketch of all values, and leaves its inputs unchanged."""
    parts = [latency_sketch(seed, 300) for seed in range(5)]
    counts_before = [part.count for part in parts]
    everything = new_sketch()
    for seed in range(5):
        everything.merge(latency_sketch(seed, 300))
    merged = merge_sketches(parts)
    assert_same_sketch(merged, everything)
    assert [part.count for part in parts] == counts_before
    merged.add(1.0)
    assert [part.count for part in parts] == counts_before


def test_merge_of_nothing_is_empty() -> None:
    """Merging no sketch gives an empty sketch."""
    assert merge_sketches([]).count == 0


def test_merge_refuses_different_accuracies() -> None:
    """Sketches of different relative accuracy cannot be merged."""
    with pytest.raises(ValueError):
        merge_sketches([new_sketch(), DDSketch(0.05)])


def test_other_accuracies_roundtrip() -> None:
    """The relative accuracy travels with the bytes."""
    sketch = DDSketch(0.05)
    sketch.add(42)
    restored = sketch_from_bytes(sketch_to_bytes(sketch))
    assert restored._mapping.relative_accuracy == 0.05
    assert_same_sketch(restored, sketch)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x02" + bytes(60), sketch_to_bytes(new_sketch()) + b"x"])
def test_corrupt_bytes_raise_value_error(blob: bytes) -> None:
    """Truncated, unknown-version or trailing bytes are a ValueError, not a wrong sketch."""
    with pytest.raises(ValueError):
        sketch_from_bytes(blob)


def test_truncated_bins_raise_value_error() -> None:
    """Cutting the bins short is detected."""
    blob = sketch_to_bytes(latency_sketch(5, 100))
    with pytest.raises(ValueError):
        sketch_from_bytes(blob[:-30])


def test_vectorised_merge_equals_ddsketch_merge() -> None:
    """merge_sketches sums bins with numpy; the result answers every quantile like DDSketch.merge,
    with the same count, sum, min and max, also with negative and zero values."""
    import random

    rng = random.Random(5)
    parts = []
    for _ in range(40):
        part = new_sketch()
        for _ in range(rng.randint(0, 30)):
            part.add(rng.choice([0.0, -rng.expovariate(0.1), rng.lognormvariate(3, 1.5)]))
        parts.append(part)
    expected = new_sketch()
    for part in parts:
        expected.merge(part)
    merged = merge_sketches(parts)
    assert (merged.count, merged._min, merged._max) == (expected.count, expected._min, expected._max)
    assert merged.sum == pytest.approx(expected.sum)
    for quantile in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert merged.get_quantile_value(quantile) == expected.get_quantile_value(quantile)
