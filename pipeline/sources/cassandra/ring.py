"""Token-ring arithmetic for reading a Cassandra table in parallel, exactly once.

A ring of sorted tokens t0 < t1 < ... < tn owns the ranges (t0, t1], ..., (tn-1, tn] and the
wrap-around range (tn, t0]. Reads use linear segments (lo, hi] with lo < hi, queried as
`token(pk) > lo AND token(pk) <= hi`; the wrap-around range becomes (tn, top] + (bottom, t0].
"""
from __future__ import annotations

import math

# Token space per partitioner: (bottom: never a real token, top: the highest token).
TOKEN_BOUNDS = {"Murmur3Partitioner": (-2**63, 2**63 - 1), "RandomPartitioner": (-1, 2**127)}


def ring_ranges(tokens: list[int]) -> list[tuple[int, int]]:
    """Sorted ring tokens -> the ring's ranges (start, end]; the first one wraps around."""
    return [(tokens[i - 1], tokens[i]) for i in range(len(tokens))]


def cut(start: int, end: int, pieces: int, bounds: tuple[int, int]) -> list[tuple[int, int]]:
    """Range (start, end] -> `pieces` equal linear segments (lo, hi] with lo < hi; a segment
    crossing the top of the token space becomes two. start == end is the whole ring."""
    low, high = bounds
    size = high - low
    width = (end - start) % size or size
    points = [start + width * i // pieces for i in range(pieces + 1)]
    segments = []
    for a, b in zip(points, points[1:]):
        a, b = (a - size, b - size) if a >= high else (a, b)
        if b > high:
            segments += [(a, high), (low, b - size)]
        else:
            segments.append((a, b))
    return [(a, b) for a, b in segments if a < b]


def split_ring(tokens: list[int], splits: int, bounds: tuple[int, int]) -> list[tuple[int, int]]:
    """At least `splits` segments covering the ring once; none crosses a ring token."""
    size = bounds[1] - bounds[0]
    segments = []
    for start, end in ring_ranges(sorted(tokens)):
        width = (end - start) % size or size
        segments += cut(start, end, max(1, math.ceil(splits * width / size)), bounds)
    return segments
