"""``run_demo.py --cpu-isa avx2``: the environment it sets really pins torch's CPU kernels (ATen reports AVX2)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


def _run_demo_module():
    spec = importlib.util.spec_from_file_location("run_demo_for_test", ROOT / "scripts" / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="needs an AVX2 x86 CPU")
def test_avx2_environment_pins_aten_and_is_deterministic():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **_run_demo_module().CPU_ISA_ENV["avx2"])
    code = ("import torch; torch.manual_seed(0); a = torch.randn(64, 64); "
            "print(torch.backends.cpu.get_cpu_capability(), float((a @ a).exp().sum()))")
    outs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
            for _ in range(2)]
    assert all(o.returncode == 0 for o in outs), outs[0].stderr[-2000:]
    capability = [o.stdout.split()[0] for o in outs]
    assert capability == ["AVX2", "AVX2"]
    assert outs[0].stdout == outs[1].stdout  # the pinned kernels give the same numbers run to run


def test_native_sets_nothing_and_avx2_pins_the_three_libraries():
    module = _run_demo_module()
    assert module.CPU_ISA_ENV["native"] == {}
    assert set(module.CPU_ISA_ENV["avx2"]) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR",
                                               "MKL_ENABLE_INSTRUCTIONS"}
