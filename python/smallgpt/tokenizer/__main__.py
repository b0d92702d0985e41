"""`python -m smallgpt.tokenizer`."""

import sys

from smallgpt.tokenizer.cli import main

sys.exit(main())
