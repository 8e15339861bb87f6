"""Pickler output with its structural opcodes changed, for the pre-scan's soundness tests.

Real ``pickle.dumps`` output of random nested values, then one or two
no-argument opcodes replaced, inserted or dropped: close to what the
structure grammars take, so the mutations probe their edges.
"""

from __future__ import annotations

import pickle
import pickletools
import random
from collections.abc import Iterator
from typing import Any

# No-argument opcodes that build, fill or shuffle the stack.
STRUCTURAL = b"(tldeus012a]})\x85\x86\x8f\x90\x91"


def random_value(rng: random.Random, depth: int, leaves: list[Any]) -> Any:
    """A list, tuple, set or dict nested up to ``depth`` levels, with ``leaves`` inside."""
    if depth <= 0 or rng.random() < 0.3:
        return rng.choice(leaves)
    n = rng.choice([0, 1, 2, 3, 5])
    kind = rng.choice("ldts")
    if kind == "l":
        return [random_value(rng, depth - 1, leaves) for _ in range(n)]
    if kind == "t":
        return tuple(random_value(rng, depth - 1, leaves) for _ in range(n))
    if kind == "s":
        return {rng.randint(0, 9) for _ in range(n)}
    return {rng.choice(["a", "b", 1, 2]): random_value(rng, depth - 1, leaves) for _ in range(n)}


def mutated_pickles(
    rng: random.Random,
    count: int,
    leaves: list[Any],
    structural: bytes = STRUCTURAL,
    fewest_changes: int = 1,
) -> Iterator[tuple[bytes, bytes]]:
    """``count`` pairs (pickler output at protocol 0-5, the same with
    ``fewest_changes`` to 2 of its no-argument opcodes changed, or one inserted
    or dropped)."""
    for _ in range(count):
        original = pickle.dumps(random_value(rng, rng.randint(1, 5), leaves), rng.randint(0, 5))
        data = bytearray(original)
        offsets = [pos for op, _arg, pos in pickletools.genops(original) if op.arg is None]
        for _ in range(rng.randint(fewest_changes, 2)):
            pos = rng.choice(offsets[:-1] or [0])
            change = rng.random()
            if change < 0.5:
                data[pos] = rng.choice(structural)
            elif change < 0.75:
                data[pos:pos] = bytes([rng.choice(structural)])
                break
            else:
                del data[pos]
                break
        yield original, bytes(data)
