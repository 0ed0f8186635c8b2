"""CUDA checks (skipped without a GPU): attention parity of every implementation, no host sync in the encoder and
decoder, AMP training steps (fp16 / bf16) of the tiny model, streaming inference, --resume.

Run by ``scripts/gpu_smoke.sh`` on a GPU machine; every test here is skipped on CPU-only machines (CI).
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from local2global.modeling import ms_deform_attn as msda

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.timeout(900)]
logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/local2global_tiny_synthetic.py"
CUDA = torch.device("cuda")
# The demo encoder's size: a 360x640 frame padded to 384x640 at strides 8..64 (S = 5100), 8 heads of 32, 4 points.
LEVELS = [(48, 80), (24, 40), (12, 20), (6, 10)]


def _inputs(batch, num_query, heads=8, head_dim=32, points=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in LEVELS)
    value = torch.randn(batch, num_value, heads, head_dim, generator=gen)
    loc = torch.rand(batch, num_query, heads, len(LEVELS), points, 2, generator=gen) * 1.2 - 0.1
    loc = msda._off_pixel_centres(loc, LEVELS)  # gradients jump at pixel centres (see the function)
    attn = torch.rand(batch, num_query, heads, len(LEVELS) * points, generator=gen).softmax(-1)
    attn = attn.view(batch, num_query, heads, len(LEVELS), points)
    return value, loc, attn


def _forward_backward(fn, value, spatial, start, loc, attn, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], spatial, start, leaves[1], leaves[2])
    (out * upstream).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


def _installed_compiled_candidates():
    """``(label, fn)`` of every compiled candidate that imports here (whether or not it passes the probe)."""
    import importlib

    found = []
    for label, module_name, attr in msda.COMPILED_CANDIDATES:
        try:
            found.append((label, getattr(importlib.import_module(module_name), attr).apply))
        except Exception as exc:  # noqa: BLE001 - reported, not a failure: the candidates are optional
            logger.info("compiled candidate %s not usable here: %s", label, exc)
    return found


@pytest.mark.parametrize("num_query", [300, 5100])
def test_every_attention_implementation_matches_the_reference_on_cuda(num_query):
    value, loc, attn = _inputs(2 if num_query == 300 else 1, num_query)
    spatial, start = msda.spatial_shapes_tensor(LEVELS, CUDA)
    upstream = torch.randn(value.shape[0], num_query, 8 * 32, generator=torch.Generator().manual_seed(1))
    on_cuda = [t.to(CUDA) for t in (value, loc, attn, upstream)]
    ref = _forward_backward(lambda v, s, i, l, a: msda.multi_scale_deformable_attn_pytorch(v, s, l, a),
                            on_cuda[0], spatial, start, *on_cuda[1:3], on_cuda[3])
    # the CUDA reference against the CPU reference (grid_sample's two backends)
    ref_cpu = _forward_backward(lambda v, s, i, l, a: msda.multi_scale_deformable_attn_pytorch(v, s, l, a),
                                value, LEVELS, None, loc, attn, upstream)
    for got, want in zip(ref, ref_cpu):
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
    impls = [("fast", lambda v, s, i, l, a: msda.multi_scale_deformable_attn_fast(v, s, l, a))]
    msda.register_compiled_kernel(None)
    for label, fn in _installed_compiled_candidates():
        reason = msda.probe_kernel(fn, CUDA)
        if reason is not None:
            logger.warning("compiled candidate %s fails its CUDA probe (%s): not compared", label, reason)
            continue
        impls.append((label, lambda v, s, i, l, a, _fn=fn: _fn(v, s, i, l, a, 64)))
    for label, fn in impls:
        got = _forward_backward(fn, on_cuda[0], spatial, start, *on_cuda[1:3], on_cuda[3])
        for what, g, r in zip(("output", "grad value", "grad locations", "grad weights"), got, ref):
            torch.testing.assert_close(g, r, atol=2e-4, rtol=2e-4, msg=lambda m: f"{label} {what}: {m}")
    logger.info("CUDA attention parity checked for: %s", ", ".join(label for label, _ in impls))
    # the automatic choice is the first candidate that passed (or none)
    msda._reset_compiled_lookup()
    passed = [label for label, _ in impls if label != "fast"]
    assert msda.compiled_kernel_name(CUDA) == (passed[0] if passed else None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_deformable_attention_layer_stays_fp32_under_autocast(dtype):
    torch.manual_seed(0)
    layer = msda.MultiScaleDeformableAttention(embed_dim=64, num_heads=4, num_levels=4, num_points=2).to(CUDA)
    spatial, start = msda.spatial_shapes_tensor([(12, 20), (6, 10), (3, 5), (2, 3)], CUDA)
    num_value = int(sum(h * w for h, w in msda.host_spatial_shapes(spatial)))
    query, value = torch.randn(2, 50, 64, device=CUDA), torch.randn(2, num_value, 64, device=CUDA)
    refs = torch.rand(2, 50, 4, 4, device=CUDA) * 0.5 + 0.25
    expected = layer(query, value=value, reference_points=refs, spatial_shapes=spatial, level_start_index=start)
    with torch.autocast("cuda", dtype=dtype):
        got = layer(query, value=value, reference_points=refs, spatial_shapes=spatial, level_start_index=start)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_encoder_and_decoder_run_without_a_host_sync():
    """``torch.cuda.set_sync_debug_mode("error")`` raises at any synchronising call (``.tolist()``, ``.item()``,
    a blocking copy): the tiny model's pixel encoder and decoder step must run through without one (after a first
    call that fills the spatial-shapes cache)."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(REPO / CONFIG))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(CUDA).eval()
    images = torch.randn(1, 3, 64, 96, device=CUDA)

    def step():
        features = model.backbone(images)
        mask_features, multi_scale = model.pixel_decoder.forward_features(features)
        bundle = model.decoder.prepare_memory(multi_scale)
        output_memory, _, coords = model.decoder.encode_tokens(bundle)
        return model.decoder.decode(output_memory[:, :7], coords[:, :7].clamp(-5, 5), bundle, mask_features)

    with torch.no_grad():
        step()  # first call: builds (and caches) the spatial-shapes tensors, a host-to-device copy
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.pred_masks[-1].shape[:2] == (1, 7)


# ----------------------------------------------------------------------------------------------------------
# Training, resume, streaming inference on the tiny model
# ----------------------------------------------------------------------------------------------------------
def _train_net(args, synthetic_root, flags=(), timeout=600):
    from script_runner import run_script

    proc = run_script("train_net.py", [*flags, "--config-file", CONFIG, "train.device=cuda", "train.seed=0",
                                       "train.log_period=1", "train.eval_period=-1",
                                       "dataloader.train.total_batch_size=2", *args], synthetic_root,
                      timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc


def _loss_rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.json").read_text().splitlines() if line.strip()]
    return [r for r in rows if "total_loss" in r]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_one_amp_training_step_on_the_tiny_config(tmp_path, tiny_synthetic_root, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    out = tmp_path / "run"
    # '+' sets the key whether or not the config file already has it (defaults: engine/trainer.py AMP_DEFAULTS)
    proc = _train_net(["train.max_iter=1", "train.amp.enabled=True", f"+train.amp.precision={precision}",
                       f"train.output_dir={out}"], tiny_synthetic_root)
    expected = "with a GradScaler" if precision == "fp16" else "without loss scaling"
    assert expected in proc.stdout
    (row,) = _loss_rows(out)
    assert np.isfinite(row["total_loss"]) and row["total_loss"] > 0
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 0
    scaler = ckpt["trainer"].get("grad_scaler", {})
    assert (scaler != {}) == (precision == "fp16")  # bf16 keeps no loss scale


def test_resume_on_cuda_continues_after_the_stored_iteration(tmp_path, tiny_synthetic_root):
    out = tmp_path / "run"
    common = ["train.amp.enabled=True", "+train.amp.precision=fp16", "train.checkpointer.period=1",
              f"train.output_dir={out}"]
    _train_net(["train.max_iter=2", *common], tiny_synthetic_root)
    first = _loss_rows(out)
    assert [r["iteration"] for r in first] == [0, 1]
    _train_net(["train.max_iter=3", *common], tiny_synthetic_root, flags=["--resume"])
    resumed = _loss_rows(out)[len(first):]
    assert [r["iteration"] for r in resumed] == [2]
    assert np.isfinite(resumed[0]["total_loss"])
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 2 and ckpt["trainer"]["grad_scaler"]  # the loss scale travels with --resume


def test_streaming_inference_on_cuda_matches_the_video_result():
    """VideoPredictor on CUDA: per-frame instances, then the video result; the deferred post-processing (only the
    top-k slots finished) gives the same video result as finishing every slot on every frame."""
    from detectron2.config import LazyConfig, instantiate

    from local2global.inference.predictor import VideoPredictor

    cfg = LazyConfig.load(str(REPO / CONFIG))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(CUDA).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    results = {}
    for deferred in (True, False):
        model.postprocessor.deferred = deferred
        predictor = VideoPredictor(model=model, min_size_test=48, max_size_test=64)
        for frame in frames:
            inst = predictor(frame)
            assert inst.masks.shape[1:] == (48, 64) and inst.masks.device.type == "cuda"
        results[deferred] = predictor.video_result(video_id=1)
    model.postprocessor.deferred = True
    assert results[True] == results[False]
    assert all(len(seg) == len(frames) for seg in results[True]["segmentations"])
