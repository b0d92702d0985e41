"""Deprecated: `smallgpt.logger` moved to `smallgpt.train.logger`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.train.logger as _moved

warnings.warn("smallgpt.logger moved to smallgpt.train.logger", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
