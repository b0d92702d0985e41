"""Deprecated: `smallgpt.health` moved to `smallgpt.train.health`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.health as _moved

warnings.warn("smallgpt.health moved to smallgpt.train.health", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
