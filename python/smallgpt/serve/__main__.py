"""`python -m smallgpt.serve`."""

import sys

from smallgpt.serve.cli import main

sys.exit(main())
