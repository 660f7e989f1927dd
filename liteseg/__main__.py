"""`python -m liteseg` is the `liteseg` command."""

import sys

from .cli import main

sys.exit(main())
