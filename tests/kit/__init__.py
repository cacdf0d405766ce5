"""The tests' kits: stand-in mirrors, bootable cores, network-namespace labs, the demo."""
