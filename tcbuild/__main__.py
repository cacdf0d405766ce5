"""`python -m tcbuild` runs the command-line tool."""

import sys

from .cli.commands import main

sys.exit(main())
