"""`python -m liteseg` is the `liteseg` command."""

import sys

from liteseg.cli.main import main

sys.exit(main())
