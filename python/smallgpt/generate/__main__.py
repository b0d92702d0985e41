"""`python -m smallgpt.generate`."""

import sys

from smallgpt.generate.cli import main

sys.exit(main())
