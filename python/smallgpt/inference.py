"""Deprecated: `smallgpt.inference` moved to `smallgpt.checkpoint.resolve`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.checkpoint.resolve as _moved

warnings.warn(
    "smallgpt.inference moved to smallgpt.checkpoint.resolve", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
