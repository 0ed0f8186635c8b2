"""Shared helpers of the benchmark cases: model building, synthetic frames, device choice, subprocess runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
R50 = ROOT / "configs" / "models" / "local2global_r50.py"
TINY = ROOT / "configs" / "models" / "local2global_tiny.py"
MODEL_CONFIGS = {"r50": R50, "tiny": TINY}

logger = logging.getLogger(__name__)


def device() -> torch.device:
    """CUDA when available, else CPU (the same benchmark commands run on both)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(name: str = "r50", overrides: Sequence[str] = (), seed: int = 0, eval_mode: bool = True):
    """Instantiate ``configs/models/local2global_<name>.py`` with ``key=value`` overrides, random weights."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(MODEL_CONFIGS[name]))
    cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    torch.manual_seed(seed)
    model = instantiate(cfg.model).to(device())
    return model.eval() if eval_mode else model.train()


def synthetic_frame(index: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic ``3×H×W`` uint8 frame: a smooth background and three moving shapes (cheap, on the fly).

    Frames are generated one at a time so that the input itself never grows with the video length.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=(3, 1, 1))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = base + 30 * np.sin(xx / (17 + 3 * seed) + yy / 29)[None]
    for k in range(3):
        cx = (0.2 + 0.3 * k + 0.004 * index * (k + 1)) % 1.0 * width
        cy = (0.3 + 0.2 * k + 0.003 * index * (2 - k)) % 1.0 * height
        r = (0.08 + 0.03 * k) * min(height, width)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img[:, inside] = np.array([220 - 60 * k, 60 + 70 * k, 120])[:, None]
    img += rng.normal(0, 3, size=img.shape)
    return torch.from_numpy(np.clip(img, 0, 255).astype(np.uint8))


def run_subprocess(args: List[str], env_extra: Optional[Dict[str, str]] = None, timeout: float = 3600) -> dict:
    """Run ``python <args>`` from the repository root; the child prints one JSON line last, which is returned."""
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(args)} printed no JSON result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MiB), from ``/proc/self/status`` VmHWM (fallback: getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> List[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def synthetic_clip(num_frames: int, height: int, width: int, num_classes: int, seed: int = 0) -> dict:
    """A training clip (SPEC §5 format) of ``synthetic_frame`` frames with 3 tracked disc instances."""
    from detectron2.structures import BitMasks, Boxes, Instances

    images, instances = [], []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(num_frames):
        images.append(synthetic_frame(t, height, width, seed))
        masks = []
        for k in range(3):
            cx = (0.2 + 0.3 * k + 0.004 * t * (k + 1)) % 1.0 * width
            cy = (0.3 + 0.2 * k + 0.003 * t * (2 - k)) % 1.0 * height
            r = (0.08 + 0.03 * k) * min(height, width)
            masks.append((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
        m = torch.from_numpy(np.stack(masks))
        inst = Instances((height, width))
        inst.gt_classes = torch.tensor([k % num_classes for k in range(3)], dtype=torch.long)
        bm = BitMasks(m)
        inst.gt_masks = bm
        inst.gt_boxes = bm.get_bounding_boxes()
        inst.gt_valid = m.flatten(1).any(1)
        inst.gt_ids = torch.arange(3, dtype=torch.long)
        instances.append(inst)
    return {"images": images, "instances": instances}
