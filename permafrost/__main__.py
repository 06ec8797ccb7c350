"""`python -m permafrost`: the same as the `permafrost` command."""

import sys

from permafrost.cli import main

sys.exit(main())
