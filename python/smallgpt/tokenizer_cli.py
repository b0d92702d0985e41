"""Deprecated: `smallgpt.tokenizer_cli` moved to `smallgpt.tokenizer.cli`; this alias goes in the next release."""

import sys
import warnings

import smallgpt.tokenizer.cli as _moved

warnings.warn(
    "smallgpt.tokenizer_cli moved to smallgpt.tokenizer.cli", DeprecationWarning, stacklevel=2
)
sys.modules[__name__] = _moved
