"""Deprecated: `smallgpt.schedule` moved to `smallgpt.optim.schedule`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.optim.schedule as _moved

warnings.warn(
    "smallgpt.schedule moved to smallgpt.optim.schedule", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
