"""Generated datasets written atomically and recognised by a completion stamp (the synthetic VIS and VPS data).

A generator writes into a temporary sibling folder, adds a JSON stamp (``generator_version``, ``config``,
``stats``) last and renames the folder into place, so an interrupted run never leaves a folder that looks
complete, and of several concurrent callers the first to finish wins (the others keep its result).
:func:`ensure_stamped_dataset` makes a dataset only when no complete one is there and refuses one made with other
parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from typing import Callable, Dict, Optional

from local2global.evaluation.results_io import atomic_write_bytes

__all__ = ["read_stamp", "build_stamped_dataset", "move_into_place", "ensure_stamped_dataset"]


def read_stamp(root: str, stamp_name: str) -> Optional[dict]:
    """The completion stamp ``<root>/<stamp_name>`` (``None`` if missing or unreadable)."""
    try:
        with open(os.path.join(root, stamp_name)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def move_into_place(tmp: str, root: str, overwrite: bool, what: str = "dataset") -> None:
    """Rename the finished ``tmp`` folder to ``root`` (replacing an old one only when ``overwrite``)."""
    if os.path.exists(root) and overwrite:
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.old-", dir=os.path.dirname(root))
        os.rmdir(old)
        os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        if os.path.exists(root):
            raise FileExistsError(root)
        os.rename(tmp, root)
    except OSError as e:  # another process finished first (rename onto a non-empty folder fails)
        if os.path.exists(root):
            raise FileExistsError(f"{what} root {root!r} appeared while generating") from e
        raise


def build_stamped_dataset(root: str, write: Callable[[str], Dict], *, stamp_name: str, version: int, config: Dict,
                          overwrite: bool = False, what: str = "dataset") -> dict:
    """Write a dataset with ``write(tmp_folder) -> stats`` and move it into place with its stamp.

    Args:
        root: the dataset folder; must not exist unless ``overwrite``.
        write: fills the temporary folder it is given and returns the statistics stored in the stamp.
        stamp_name / version / config: the stamp's file name, ``generator_version`` and ``config``.
        what: the dataset's name in error messages.

    Returns:
        The stamp.
    """
    root = os.path.abspath(os.fspath(root))
    if os.path.exists(root) and not overwrite:
        raise FileExistsError(f"{what} root {root!r} already exists (pass overwrite=True to replace it)")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.partial-", dir=parent)
    try:
        stamp = {"generator_version": version, "config": config, "stats": write(tmp)}
        atomic_write_bytes(os.path.join(tmp, stamp_name), json.dumps(stamp, sort_keys=True, indent=1).encode())
        os.chmod(tmp, 0o755)
        move_into_place(tmp, root, overwrite, what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stamp


def ensure_stamped_dataset(root: str, kwargs: Dict, *, config_cls, make: Callable[..., dict],
                           is_complete: Callable[[str], bool], stamp_name: str, what: str = "dataset") -> str:
    """Make the dataset at ``root`` with ``make(root, **kwargs)`` unless a complete one is already there.

    Without ``kwargs`` any complete dataset at ``root`` is accepted; with some, it must have been made with the
    same values (a field missing from an older stamp counts as its default).

    Raises:
        ValueError: ``root`` holds a complete dataset made with different parameters.
        FileExistsError: ``root`` exists but holds no complete dataset (it is never deleted).
    """
    root = os.path.abspath(os.fspath(root))
    wanted = asdict(config_cls(**kwargs))
    if not is_complete(root):
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)  # an empty folder (e.g. made by a user) is fine to replace
        elif os.path.exists(root):
            raise FileExistsError(f"{root!r} exists but holds no complete {what} (no {stamp_name}); "
                                  "remove it or choose another root")
        try:
            make(root, **kwargs)
            return root
        except FileExistsError:
            if not is_complete(root):  # someone else created something that is not a dataset
                raise
    have = (read_stamp(root, stamp_name) or {}).get("config", {})
    defaults = {f.name: f.default for f in fields(config_cls)}
    diff = {k: (have.get(k, defaults[k]), v) for k, v in wanted.items()
            if k in kwargs and have.get(k, defaults[k]) != v}
    if diff:
        raise ValueError(f"{what} at {root!r} was made with different parameters (existing, requested): {diff}; "
                         "remove it or choose another root")
    return root
