"""Deprecated: `smallgpt.metrics` moved to `smallgpt.evaluate.metrics`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.evaluate.metrics as _moved

warnings.warn(
    "smallgpt.metrics moved to smallgpt.evaluate.metrics", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
