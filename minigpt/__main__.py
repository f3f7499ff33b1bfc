"""`python -m minigpt ...` runs the `minigpt` command."""

import sys

from .cli import main

sys.exit(main())
