"""`python -m smallgpt.gpu_check`."""

import sys

from smallgpt.gpu_check.cli import main

sys.exit(main())
