"""Loading detrex MaskDINO checkpoints and detectron2 backbone weights into :class:`Local2Global`.

detrex's MaskDINO keeps the pixel decoder and the transformer decoder under ``sem_seg_head``; Local2Global
injects them as ``pixel_decoder`` and ``decoder``. Inside those modules every name and shape equals detrex's, so
the mapping is a prefix rename:

==================================  ============================
detrex MaskDINO                     Local2Global
==================================  ============================
``sem_seg_head.pixel_decoder.*``    ``pixel_decoder.*``
``sem_seg_head.predictor.*``        ``decoder.*``
``backbone.*``                      ``backbone.*``
``criterion.empty_weight``          ``criterion.empty_weight``
==================================  ============================

:func:`register_detrex_key_mapping` installs a load-state-dict pre-hook on the model, so
``DetectionCheckpointer(model).load(path)`` loads a detrex checkpoint directly;
``scripts/convert_maskdino_checkpoint.py`` writes a converted file for other tools.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

__all__ = ["DETREX_PREFIX_MAP", "convert_maskdino_state_dict", "register_detrex_key_mapping",
           "Local2GlobalCheckpointer", "CheckpointMismatchError", "CheckpointFileError"]

logger = logging.getLogger(__name__)

DETREX_PREFIX_MAP = {
    "sem_seg_head.pixel_decoder.": "pixel_decoder.",
    "sem_seg_head.predictor.": "decoder.",
}


def convert_maskdino_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename detrex MaskDINO keys to Local2Global keys (other keys are kept as they are)."""
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for old, new in DETREX_PREFIX_MAP.items():
            if key.startswith(old):
                new_key = new + key[len(old):]
                break
        out[new_key] = value
    return out


def _remap_hook(module: nn.Module, state_dict, prefix: str, *args, **kwargs) -> None:
    keys = [k for k in state_dict if k.startswith(prefix + "sem_seg_head.")]
    if not keys:
        return
    for key in keys:
        rel = key[len(prefix):]
        for old, new in DETREX_PREFIX_MAP.items():
            if rel.startswith(old):
                state_dict[prefix + new + rel[len(old):]] = state_dict.pop(key)
                break
    logger.info("Mapped %d detrex MaskDINO keys (sem_seg_head.*) to Local2Global names", len(keys))


def register_detrex_key_mapping(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` accept detrex MaskDINO key names."""
    model.register_load_state_dict_pre_hook(_remap_hook)


class CheckpointFileError(ValueError):
    """A checkpoint file that does not exist or cannot be read as a checkpoint (junk, text, truncated download).

    The message names the file and says what is wrong; the unpickler's own exception is chained as ``__cause__``.
    """


#: A checkpoint's unpickled objects are at most about this multiple of its file size (tensors are stored raw).
_UNPICKLE_GROWTH = 4


def _physical_memory() -> int:
    """Bytes of physical memory (a large number where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


#: Longest excerpt of the underlying exception's message quoted in a :class:`CheckpointFileError`.
_MAX_CAUSE_CHARS = 200


def _describe(exc: BaseException) -> str:
    """``"Type: first sentence of the message"`` (torch's unpickler appends advice that does not apply to junk)."""
    text = " ".join(str(exc).split()).split(". ")[0]
    if len(text) > _MAX_CAUSE_CHARS:
        text = text[:_MAX_CAUSE_CHARS] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not belong to the model's architecture (the message lists keys and shapes)."""


def _atomic_write(path: str, write: Callable, before_replace: Optional[Callable[[str], None]] = None,
                  mode: str = "wb") -> None:
    """``write(f)`` into a temporary file next to ``path``, fsync, then ``os.replace`` it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; checkpoints are shared like any output
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Local2GlobalCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that maps detrex names and warns about a pixel-normalisation mismatch.

    Saving is atomic: the checkpoint and ``last_checkpoint`` are written to temporary files and moved into
    place with ``os.replace``, so a process killed while saving leaves the previous checkpoint and
    ``last_checkpoint`` as they were (``before_replace``, if set, is called with the temporary file's path
    just before the move: the callbacks of :mod:`local2global.engine.extensions`).

    Loading a checkpoint of another architecture fails loudly (:class:`CheckpointMismatchError`) when no
    model parameter can be loaded from it, or when more than half of the parameters it shares by name with
    the model have other shapes; the message lists the offending keys with both shapes. Smaller mismatches
    (a new class head, a module the checkpoint lacks, e.g. the aligner of a MaskDINO checkpoint) are loaded
    around, with a warning that lists them.

    MaskDINO's (and this project's) default normalisation is RGB with ImageNet mean/std, matching
    torchvision-style ResNet weights. MSRA-style ``R-50.pkl`` weights (Caffe2, BGR, std 1) need
    ``pixel_std = (1, 1, 1)`` and BGR input; loading them with the default settings silently degrades
    accuracy, so this warns.
    """

    def _load_model(self, checkpoint):
        author = checkpoint.get("__author__", "")
        std = getattr(self.model, "pixel_std", None)
        if author == "Caffe2" and std is not None and not torch.allclose(std.float().cpu(), torch.ones_like(std.cpu())):
            logger.warning(
                "Loading MSRA/Caffe2-style weights (BGR input, pixel_std 1) into a model normalised with "
                "pixel_std=%s (torchvision/MaskDINO convention). Set model.pixel_std=[1,1,1] and BGR means, or "
                "use torchvision-converted weights.", std.flatten().tolist())
        checkpoint["model"] = convert_maskdino_state_dict(checkpoint["model"])
        model_keys = set(self.model.state_dict().keys())
        ckpt_keys = {k[len("module."):] if k.startswith("module.") else k for k in checkpoint["model"]}
        incompatible = super()._load_model(checkpoint)
        self._check_architecture(incompatible, model_keys, ckpt_keys)
        return incompatible

    #: called with the temporary file of every save before it replaces the checkpoint (extension callbacks)
    before_replace: Optional[Callable[[str], None]] = None

    def _check_architecture(self, incompatible, model_keys, ckpt_keys) -> None:
        shapes = list(getattr(incompatible, "incorrect_shapes", []) or [])
        bad = {k for k, _, _ in shapes}
        loaded = len((ckpt_keys & model_keys) - bad)
        where = f"checkpoint {getattr(self, '_loading_path', '')!r}"

        def listing(items):
            items = list(items)
            text = "; ".join(items[:20])
            return text + (f"; ... ({len(items) - 20} more)" if len(items) > 20 else "")

        shape_list = [f"{k}: {tuple(a)} in the checkpoint, {tuple(b)} in the model" for k, a, b in shapes]
        if loaded == 0:
            raise CheckpointMismatchError(
                f"{where} does not fit this model ({type(self.model).__name__}): none of its "
                f"{len(model_keys)} parameters/buffers could be loaded. Unexpected checkpoint keys: "
                f"{listing(sorted(getattr(incompatible, 'unexpected_keys', []) or []))}. Shape mismatches: "
                f"{listing(shape_list) or 'none'}")
        if shapes and len(shapes) > 0.5 * (len(shapes) + loaded):
            raise CheckpointMismatchError(
                f"{where} is of another architecture: {len(shapes)} of the {len(shapes) + loaded} parameters it "
                f"shares with the model have other shapes: {listing(shape_list)}")
        if shapes:
            logger.warning("%s: %d parameter(s) not loaded because of shape mismatches: %s", where, len(shapes),
                           listing(shape_list))

    def load(self, path, *args, **kwargs):
        """Load ``path`` (see ``DetectionCheckpointer.load``), with clear errors for files that are not checkpoints.

        Raises:
            CheckpointFileError: ``path`` is a local path that does not exist, or the file cannot be read as a
                checkpoint (random bytes, a text file, a truncated download, a pickle of something else); the
                message names the file.
            CheckpointMismatchError: a checkpoint of another architecture (see the class docstring).
        """
        if path and "://" not in str(path) and not os.path.isfile(path):
            what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
            raise CheckpointFileError(f"checkpoint {str(path)!r} {what}")
        self._loading_path = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str):
        """``DetectionCheckpointer._load_file`` whose failures name the file (:class:`CheckpointFileError`)."""
        size = os.path.getsize(filename) if os.path.isfile(filename) else None
        where = f"checkpoint {filename!r}" + (f" ({size} bytes)" if size is not None else "")
        hint = ("it is not a torch.save / detectron2 .pkl checkpoint, or it is incomplete (an interrupted download "
                "or copy?)")
        try:
            loaded = super()._load_file(filename)
        except MemoryError as e:
            # A real checkpoint unpickles to about its file size; a file far smaller than this machine's memory
            # that asks for more is corrupt (a random opcode requesting terabytes), not too large to load.
            if size is None or size * _UNPICKLE_GROWTH > _physical_memory():
                raise
            raise CheckpointFileError(f"{where} cannot be read: unpickling it asked for more memory than the machine "
                                      f"has, which a file of this size cannot hold; {hint}") from e
        except (AssertionError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the unpicklers raise anything (KeyError, EOFError, RuntimeError, ...)
            raise CheckpointFileError(f"{where} cannot be read: {hint} ({_describe(e)})") from e
        if not isinstance(loaded, Mapping) or not isinstance(loaded.get("model"), Mapping):
            kind = type(loaded.get("model") if isinstance(loaded, Mapping) else loaded).__name__
            raise CheckpointFileError(f"{where} holds a {kind}, not a state dict or a {{'model': state dict}} dict")
        if loaded["model"] and not any(isinstance(v, (torch.Tensor, np.ndarray)) for v in loaded["model"].values()):
            raise CheckpointFileError(f"{where}: its state dict holds no tensors")
        return loaded

    def save(self, name: str, **kwargs) -> None:
        """Write ``<save_dir>/<name>.pth`` and then ``last_checkpoint``, each atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f), self.before_replace)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``last_checkpoint`` at ``last_filename_basename`` (atomically)."""
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename), mode="w")
