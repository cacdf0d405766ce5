"""gzip for initramfs segments: libdeflate, no timestamp or name in the header, both cores.

The kernel reads several gzip members in a row as long as each ends on a cpio trailer, so an
image is cut at entry boundaries into chunks of about `CHUNK` bytes, each a complete cpio
archive in its own gzip member. Worker threads build and compress the chunks (libdeflate
releases the GIL); many small chunks keep both cores busy to the end whatever each chunk's
data costs to compress, and only the chunks being worked on are held uncompressed. The chunk
size is fixed, never derived from the number of threads, so the bytes depend on the input alone.
A member boundary costs about 400 bytes of output (the window restarts empty).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

CHUNK = 4 << 20  # uncompressed bytes per gzip member (entries are never split)


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


def gzip_chunks(chunks: Sequence[Callable[[], bytes]], compression: Compression,
                jobs: int = 2) -> list[bytearray]:
    """Build (call) and compress every chunk on `jobs` threads; the gzip members in order."""
    def work(chunk: Callable[[], bytes]) -> bytearray:
        return gzip_member(chunk(), compression)

    if jobs <= 1 or len(chunks) <= 1:
        return [work(chunk) for chunk in chunks]
    with ThreadPoolExecutor(min(jobs, len(chunks)), thread_name_prefix="gzip") as pool:
        return list(pool.map(work, chunks))

