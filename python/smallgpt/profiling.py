"""Deprecated: `smallgpt.profiling` moved to `smallgpt.train.profiling`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.profiling as _moved

warnings.warn(
    "smallgpt.profiling moved to smallgpt.train.profiling", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
