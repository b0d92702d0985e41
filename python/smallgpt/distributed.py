"""Deprecated: `smallgpt.distributed` moved to `smallgpt.train.distributed`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.distributed as _moved

warnings.warn(
    "smallgpt.distributed moved to smallgpt.train.distributed", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
