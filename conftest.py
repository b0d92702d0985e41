"""Root conftest: shared fixtures for tests/ and benches/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpora import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The corpora directory (`../shared/data`); skips the test when it cannot be found."""
    found = shared_data_dir()
    if found is None:
        pytest.skip("shared corpora not found: set SMALLGPT_SHARED_DATA or put shared/ beside the repo")
    return found
