"""``http.limits.json_depth``: the pair-peeling path for small documents agrees with the vectorised scan
(and both with the nesting Python sees), on random documents with brackets, quotes and escapes in strings."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from aistats_gateway.http import limits


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _doc(rng: random.Random, depth: int) -> Any:
    """One spine ``depth`` deep (ending early now and then) with small siblings on the way."""
    if depth == 0 or rng.random() < 0.05:
        return rng.choice([1, None, "plain", 's[{"\\', "]]}}", "\\\\", '\\"['])
    kids = [_doc(rng, min(depth - 1, rng.randint(0, 2))) for _ in range(rng.randint(0, 6))]
    kids.insert(rng.randint(0, len(kids)), _doc(rng, depth - 1))
    if rng.random() < 0.5:
        return kids
    return {f"k{i}{rng.choice(['', '[', '}'])}": v for i, v in enumerate(kids)}


def test_random_documents_measure_their_true_depth() -> None:
    rng = random.Random(20261203)
    small = large = 0
    for _ in range(3000):
        value = _doc(rng, rng.randint(0, 40))
        raw = orjson.dumps(value)
        for given in (raw, bytearray(raw)):
            assert limits.json_depth(given) == _depth(value), raw[:200]
        kept = raw.translate(None, b"".join(bytes([b]) for b in range(256) if b not in b'[]{}'))
        small += len(kept) <= limits._SMALL
        large += len(kept) > limits._SMALL
    assert small > 100 and large > 100  # both paths were taken


@pytest.mark.parametrize("depth", [31, 32, 33, 100])
def test_the_limit_boundary_on_both_paths(depth: int) -> None:
    narrow = "[" * depth + "]" * depth  # few brackets: the peeling path (up to 128 levels)
    wide = "[" * depth + ",".join(["[]"] * 200) + "]" * depth  # many: the scan
    assert limits.json_depth(narrow.encode()) == depth
    assert limits.json_depth(wide.encode()) == depth + 1
