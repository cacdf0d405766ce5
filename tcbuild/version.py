"""The package's version and the number of what it writes: a leaf, so any module can name them
without importing the package root."""

__version__ = "0.1.0"

FORMAT = 2
"""What tcbuild's writers produce (newc archives, gzip members, the cache's indexes), numbered.
Every cache key and build id carries it, so bytes an older writer left in a cache are never
taken for a newer one's. Bump it with any change to those bytes: the golden test of the writer
(`tests/test_rebuild.py`) fails until it is bumped and the new bytes recorded with it."""
