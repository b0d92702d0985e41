"""Deprecated: `smallgpt.oom` moved to `smallgpt.train.oom`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.oom as _moved

warnings.warn("smallgpt.oom moved to smallgpt.train.oom", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
