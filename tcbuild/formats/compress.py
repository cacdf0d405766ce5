"""gzip for initramfs segments: libdeflate, no timestamp or name in the header, both cores.

The kernel reads several gzip members in a row as long as each ends on a cpio trailer, so an
image is cut at entry boundaries into runs (`runs.split`), each a complete cpio archive in its
own gzip member. Worker threads build and compress the runs (libdeflate releases the GIL); many
small runs keep both cores busy to the end whatever each run's data costs to compress, and only
the runs being worked on are held uncompressed (`in_order` hands the members on in order as they
are done). Where runs end depends on the entries alone, never on the number of threads, so the
bytes depend on the input alone. A member boundary costs about 400 bytes of output (the window
restarts empty).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class Compression(StrEnum):
    """Speed against size: `small` is as small as Tiny Core's `advdef -z4`; `fast` is for
    iterating."""

    SMALL = "small"
    FAST = "fast"

    @property
    def level(self) -> int:
        return {Compression.SMALL: 12, Compression.FAST: 4}[self]


def gzip_member(data: bytes | bytearray | memoryview, compression: Compression) -> bytearray:
    """One gzip member without a timestamp or name (the same bytes on every run)."""
    import deflate  # loaded on the first compression: `import tcbuild` stays light

    return deflate.gzip_compress(data, compression.level)


def in_order(work: Sequence[Callable[[], T]], jobs: int = 2) -> Iterator[T]:
    """Call every function on `jobs` threads; the results in order, each as soon as it and the
    ones before it are done, with at most `2 * jobs` calls ahead of the caller."""
    if jobs <= 1 or len(work) <= 1:
        yield from (call() for call in work)
        return
    with ThreadPoolExecutor(min(jobs, len(work)), thread_name_prefix="gzip") as pool:
        ahead: deque[Future[T]] = deque()
        try:
            for call in work:
                ahead.append(pool.submit(call))
                if len(ahead) > 2 * jobs:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:  # the caller stopped early (an error): nothing more to do
                future.cancel()
