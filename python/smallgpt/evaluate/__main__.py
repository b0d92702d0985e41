"""`python -m smallgpt.evaluate`."""

import sys

from smallgpt.evaluate.cli import main

sys.exit(main())
