"""Boot files: which client gets which boot program, pxelinux and iPXE configs, the syslinux
files, writing ISOs and FAT images."""
