"""`python -m smallgpt.train`."""

import sys

from smallgpt.train.cli import main

sys.exit(main())
