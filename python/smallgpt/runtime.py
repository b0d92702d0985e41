"""Deprecated: `smallgpt.runtime` moved to `smallgpt.train.runtime`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.runtime as _moved

warnings.warn("smallgpt.runtime moved to smallgpt.train.runtime", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
