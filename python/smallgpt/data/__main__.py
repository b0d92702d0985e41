"""`python -m smallgpt.data`."""

import sys

from smallgpt.data.cli import main

sys.exit(main())
