"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The project's shared folder (``$L2G_SHARED_DIR`` or ``<repo>/../shared``)."""
    return Path(os.environ.get("L2G_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def maskdino_reference_dir() -> Path:
    """``shared/reference/maskdino`` (the detrex MaskDINO fixtures); skips the test when absent."""
    path = shared_dir() / "reference" / "maskdino"
    if not path.is_dir():
        pytest.skip(f"MaskDINO reference data not found at {path} (set L2G_SHARED_DIR)")
    return path
