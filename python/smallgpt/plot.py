"""Deprecated: `smallgpt.plot` moved to `smallgpt.train.plot`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.plot as _moved

warnings.warn("smallgpt.plot moved to smallgpt.train.plot", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
