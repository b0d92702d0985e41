"""Deprecated: `smallgpt.hf` moved to `smallgpt.model.hf`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.model.hf as _moved

warnings.warn("smallgpt.hf moved to smallgpt.model.hf", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
