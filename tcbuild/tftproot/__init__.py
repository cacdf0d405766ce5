"""The TFTP root as tcbuild keeps it: releases written and switched, its state, `verify`."""
