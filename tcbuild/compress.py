"""gzip for initramfs segments: libdeflate, no timestamp or name in the header, both cores.

The kernel reads several gzip members in a row, so independent segments are compressed on
separate threads (libdeflate releases the GIL) and simply concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

import deflate


class Compression(StrEnum):
    """Speed against size: `small` matches Tiny Core's `advdef -z4`; `fast` is for iterating."""

    SMALL = "small"
    FAST = "fast"

    @property
    def level(self) -> int:
        return {Compression.SMALL: 12, Compression.FAST: 4}[self]


def gzip_segments(segments: Sequence[bytes], compression: Compression, jobs: int = 2) -> bytes:
    """One gzip member per segment, compressed in parallel, concatenated in order."""
    if len(segments) == 1 or jobs == 1:
        return b"".join(deflate.gzip_compress(s, compression.level) for s in segments)
    with ThreadPoolExecutor(jobs) as pool:
        members = pool.map(lambda s: deflate.gzip_compress(s, compression.level), segments)
        return b"".join(members)
