"""On-disk structures, no policy: newc cpio archives, .tcz squashfs extensions, gzip/xz members,
build.json manifests, state files, TOML reading. Imports nothing but the leaves and each other."""
