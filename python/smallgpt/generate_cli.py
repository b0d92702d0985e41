"""Deprecated: `smallgpt.generate_cli` moved to `smallgpt.generate.cli`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.generate.cli as _moved

warnings.warn(
    "smallgpt.generate_cli moved to smallgpt.generate.cli", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
