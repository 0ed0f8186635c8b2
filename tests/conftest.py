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


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic YouTube-VIS dataset shared by the script tests: 4 training and 2 held-out videos of 4-6
    frames, no long video. The tests only read it (each writes its runs under its own ``tmp_path``)."""
    pytest.importorskip("local2global.data.synthetic")
    from local2global.data.synthetic import ensure_synthetic_vis

    root = tmp_path_factory.mktemp("syn") / "synthetic_vis"
    ensure_synthetic_vis(str(root), num_train=4, num_valid=2, min_length=4, max_length=6, num_long=0)
    return root
