"""Deprecated: `smallgpt.prepare` moved to `smallgpt.data.prepare`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.data.prepare as _moved

warnings.warn("smallgpt.prepare moved to smallgpt.data.prepare", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
