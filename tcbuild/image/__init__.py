"""Composing the initramfs: the tree of entries, overlays and templates, cutting it into cpio runs,
what builds keep in the cache (incremental members, the store of input data)."""
