"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


#: The detrex MaskDINO reference data committed with the project (``tests/data/maskdino/README.md``).
MASKDINO_REFERENCE_DIR = REPO_ROOT / "tests" / "data" / "maskdino"

#: Files the parity tests read; all of them are committed under :data:`MASKDINO_REFERENCE_DIR`.
MASKDINO_REFERENCE_FILES = (
    "maskdino_r50_coco_instance_state_dict.tsv",
    "tiny_config.json",
    "tiny_init_stats.json",
    "tiny_input.pt",
    "tiny_intermediates.pt",
    "tiny_loss_outputs.pt",
    "tiny_loss_targets.pt",
    "tiny_outputs.pt",
    "tiny_state_dict.pt",
)


def maskdino_reference_path() -> Path:
    """The folder of the MaskDINO reference data the parity tests compare against.

    ``$L2G_MASKDINO_REFERENCE_DIR`` names the folder itself; ``$L2G_SHARED_DIR`` (the older override) names a
    folder holding it as ``reference/maskdino``. Without either, the copy committed in ``tests/data/maskdino``.

    Returns:
        The folder path (not checked).
    """
    if os.environ.get("L2G_MASKDINO_REFERENCE_DIR"):
        return Path(os.environ["L2G_MASKDINO_REFERENCE_DIR"])
    if os.environ.get("L2G_SHARED_DIR"):
        return Path(os.environ["L2G_SHARED_DIR"]) / "reference" / "maskdino"
    return MASKDINO_REFERENCE_DIR


@pytest.fixture(scope="session")
def maskdino_reference_dir() -> Path:
    """The detrex MaskDINO reference data (:func:`maskdino_reference_path`).

    The data is part of the repository, so a missing file is an error, never a skip.
    """
    path = maskdino_reference_path()
    missing = [name for name in MASKDINO_REFERENCE_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"MaskDINO reference data missing in {path}: {', '.join(missing)} "
                                "(the files are committed in tests/data/maskdino; see its README.md)")
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
