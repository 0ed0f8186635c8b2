"""train.amp.precision (fp16 / bf16) and train.amp.tf32: resolution, the trainer built for each, the TF32 switch.

The CUDA trainers are built here without running a step (detectron2's AMPTrainer only needs CUDA in run_step);
tests/test_cuda.py runs real AMP steps on a GPU.
"""

import pytest
import torch
from omegaconf import OmegaConf

from local2global.engine.device import configure_tf32, resolve_amp_dtype
from local2global.engine.trainer import (AMP_DEFAULTS, L2GAMPTrainer, L2GCPUAutocastTrainer, L2GSimpleTrainer,
                                         build_trainer)

pytestmark = pytest.mark.timeout(60)
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_precision_names_resolve_per_device():
    assert resolve_amp_dtype(None, CUDA) == torch.float16  # detectron2's AMPTrainer default
    assert resolve_amp_dtype(None, CPU) == torch.bfloat16
    assert resolve_amp_dtype("", CPU) == torch.bfloat16
    assert resolve_amp_dtype("BF16", CPU) == torch.bfloat16
    assert resolve_amp_dtype("float16", CUDA) == torch.float16
    if not torch.cuda.is_available():  # the bf16 capability check needs a device
        assert resolve_amp_dtype("bf16", CUDA) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_amp_dtype("fp16", CPU)
    with pytest.raises(ValueError, match="not one of"):
        resolve_amp_dtype("fp8", CUDA)


def _build(device, **amp):
    cfg = OmegaConf.create({"train": {"amp": amp}})
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return build_trainer(cfg, model, [], optimizer, device)


@pytest.mark.filterwarnings("ignore:.*GradScaler.*")  # without CUDA an enabled cuda GradScaler disables itself
def test_trainer_per_precision_and_device():
    fp16 = _build(CUDA, enabled=True)  # no precision key: the default
    assert isinstance(fp16, L2GAMPTrainer) and fp16.precision == torch.float16
    assert AMP_DEFAULTS == {"precision": None, "tf32": None}
    bf16 = _build(CUDA, enabled=True, precision="bf16")
    assert isinstance(bf16, L2GAMPTrainer) and bf16.precision == torch.bfloat16
    assert not bf16.grad_scaler.is_enabled()  # bf16: no loss scaling
    assert bf16.grad_scaler.state_dict() == {}
    assert isinstance(_build(CPU, enabled=True, precision="bf16"), L2GCPUAutocastTrainer)
    assert isinstance(_build(CPU, enabled=True), L2GCPUAutocastTrainer)
    with pytest.raises(ValueError, match="fp16"):
        _build(CPU, enabled=True, precision="fp16")
    off = _build(CUDA, enabled=False, precision="bf16")
    assert type(off) is L2GSimpleTrainer


def test_tf32_switch_sets_both_flags_and_none_leaves_them():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        configure_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        configure_tf32(None)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        configure_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
