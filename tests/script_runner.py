"""Run one of ``scripts/*.py`` in a subprocess the way the script tests need it (imported by those tests).

One thread per process (the tests run beside each other on a few cores), the synthetic test dataset (when given)
through ``$L2G_SYNTHETIC_ROOT`` and no ``L2G_FAULT_*`` variable inherited from the caller's environment, so that a
fault is injected only where a test asks for it: ``train_net.py`` with ``L2G_FAULT_*`` variables runs as
``tests/tools/train_net_with_faults.py`` (the same command line, with the tests' fault hooks registered).
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, args: Sequence[str], synthetic_root=None, env_extra: Optional[Dict[str, str]] = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` with ``args`` from the repository root; stdout and stderr together in ``.stdout``.

    Args:
        synthetic_root: ``$L2G_SYNTHETIC_ROOT`` of the run (``None``: left as the caller's environment has it).
        env_extra: more environment variables (e.g. ``L2G_FAULT_*``, ``DETECTRON2_DATASETS``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("L2G_FAULT_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if synthetic_root is not None:
        env["L2G_SYNTHETIC_ROOT"] = str(synthetic_root)
    env.update(env_extra or {})
    path = REPO / "scripts" / script
    if any(k.startswith("L2G_FAULT_") for k in env_extra or {}):
        # faults exist only in the test launcher (tests/tools/fault_injection.py), never in the package
        if script != "train_net.py":
            raise ValueError(f"L2G_FAULT_* variables are read by tests/tools/train_net_with_faults.py, not {script}")
        path = REPO / "tests" / "tools" / "train_net_with_faults.py"
    return subprocess.run([sys.executable, str(path)] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
