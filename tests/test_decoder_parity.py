"""MaskDINODecoder parity with detrex (tiny fixture), the step API, state-dict layout and box_ops units."""

import json
import math

import pytest
import torch

from local2global.layers.box_ops import box_sine_embedding, inverse_sigmoid, mask2box
from local2global.modeling.segmenter.decoder import MaskDINODecoder
from local2global.modeling.segmenter.denoising import dn_attention_mask, prepare_for_dn

pytestmark = pytest.mark.timeout(240)

ATOL = RTOL = 1e-4
PREFIX = "sem_seg_head.predictor."


def _decoder_kwargs(ref_dir):
    cfg = json.loads((ref_dir / "tiny_config.json").read_text())
    kwargs = dict(cfg["resolved_config"]["sem_seg_head"]["transformer_predictor"])
    kwargs.pop("_target_")
    return kwargs


@pytest.fixture(scope="module")
def tiny(maskdino_reference_dir):
    torch.manual_seed(0)
    dec = MaskDINODecoder(**_decoder_kwargs(maskdino_reference_dir))
    sd = torch.load(maskdino_reference_dir / "tiny_state_dict.pt", weights_only=True)
    dec.load_state_dict({k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}, strict=True)
    dec.eval()
    inter = torch.load(maskdino_reference_dir / "tiny_intermediates.pt", weights_only=True)
    ref = torch.load(maskdino_reference_dir / "tiny_outputs.pt", weights_only=True)
    memory = inter["encoder_memory"]
    feats, start = [], 0
    for h, w in inter["encoder_spatial_shapes"].tolist():
        feats.append(memory[:, start:start + h * w].transpose(1, 2).reshape(memory.shape[0], -1, h, w))
        start += h * w
    return dec, feats, ref["mask_features"], ref


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


def _check(name, got, want, errors):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    errors[name] = _max_err(got, want)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def test_decoder_matches_detrex_fixture(tiny):
    dec, feats, mask_features, ref = tiny
    with torch.no_grad():
        out, mask_dict, internals = dec(feats, mask_features, return_intermediates=True)
    assert mask_dict is None
    bundle, stack = internals["bundle"], internals["decoder_output"]
    assert torch.equal(bundle.spatial_shapes, ref["decoder_spatial_shapes"])
    assert torch.equal(bundle.level_start_index, ref["decoder_level_start_index"])
    assert torch.equal(internals["topk_proposals"], ref["topk_proposals"])
    errors = {}
    _check("decoder_valid_ratios", bundle.valid_ratios, ref["decoder_valid_ratios"], errors)
    for key in ("output_memory", "enc_outputs_class_unselected", "enc_outputs_coord_unselected",
                "enc_bbox_delta_unselected", "output_proposals", "decoder_init_tgt",
                "decoder_init_refpoints_unsigmoid"):
        _check(key, internals[key], ref[key], errors)
    _check("decoder_hs", torch.stack(stack.hs), ref["decoder_hs"], errors)
    _check("decoder_layer_outputs_prenorm", torch.stack(stack.hs_prenorm), ref["decoder_layer_outputs_prenorm"],
           errors)
    _check("decoder_references", torch.stack(stack.references), ref["decoder_references"], errors)
    for key in ("pred_logits", "pred_masks", "pred_boxes"):
        _check(key, out[key], ref[key], errors)
        _check(f"interm_outputs.{key}", out["interm_outputs"][key], ref["interm_outputs"][key], errors)
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 3
    for i, (got, want) in enumerate(zip(out["aux_outputs"], ref["aux_outputs"])):
        for key in ("pred_logits", "pred_masks", "pred_boxes"):
            _check(f"aux_outputs[{i}].{key}", got[key], want[key], errors)
    print("max abs errors:", json.dumps({k: float(f"{v:.3g}") for k, v in errors.items()}, indent=1))


def test_step_api_composes_to_forward(tiny):
    dec, feats, mask_features, _ = tiny
    with torch.no_grad():
        ref_out, _ = dec(feats, mask_features)
        bundle = dec.prepare_memory(feats)
        output_memory, enc_logits, enc_coords = dec.encode_tokens(bundle)
        sel = dec.query_selector(output_memory, enc_logits, enc_coords)
        logits, masks = dec.predict(sel.queries, mask_features)
        boxes = mask2box(masks)
        out = dec.decode(sel.queries, inverse_sigmoid(boxes), bundle, mask_features)
    got = out.as_criterion_outputs()
    assert "interm_outputs" not in got
    for key in ("pred_logits", "pred_masks", "pred_boxes"):
        torch.testing.assert_close(got[key], ref_out[key], atol=0, rtol=0)
    assert len(got["aux_outputs"]) == len(ref_out["aux_outputs"])
    for a, b in zip(got["aux_outputs"], ref_out["aux_outputs"]):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    torch.testing.assert_close(logits, ref_out["interm_outputs"]["pred_logits"], atol=0, rtol=0)
    assert out.hs_prenorm_last.shape == (1, dec.num_queries, dec.hidden_dim)
    # query_pos is the decoder's own positional embedding of layer 0.
    qp = dec.query_pos(out.references[0])
    expected = dec.decoder.ref_point_head(box_sine_embedding(out.references[0], dec.hidden_dim // 2))
    torch.testing.assert_close(qp, expected)


def test_interm_boxes_get_gradients_and_queries_are_detached(tiny):
    dec, feats, mask_features, _ = tiny
    bundle = dec.prepare_memory([f.clone().requires_grad_(True) for f in feats])
    output_memory, enc_logits, enc_coords = dec.encode_tokens(bundle)
    sel = dec.query_selector(output_memory, enc_logits, enc_coords)
    assert not sel.queries.requires_grad
    assert sel.coords_unsig.requires_grad
    sel.coords_unsig.sigmoid().sum().backward()
    assert dec.decoder.bbox_embed[0].layers[0].weight.grad.abs().sum() > 0
    dec.zero_grad(set_to_none=True)


def test_default_state_dict_matches_detrex_tsv(maskdino_reference_dir):
    rows = []
    for line in (maskdino_reference_dir / "maskdino_r50_coco_instance_state_dict.tsv").read_text().splitlines()[1:]:
        name, shape, dtype = line.split("\t")
        if name.startswith(PREFIX):
            rows.append((name[len(PREFIX):], tuple(json.loads(shape)), dtype))
    assert len(rows) == 273
    with torch.device("meta"):
        dec = MaskDINODecoder(in_channels=256, num_classes=80, hidden_dim=256, num_queries=300, nheads=8,
                              dim_feedforward=2048, dec_layers=9, mask_dim=256, enforce_input_project=False,
                              two_stage=True, dn="seg", noise_scale=0.4, dn_num=100,
                              initialize_box_type="mask2box", initial_pred=True, learn_tgt=False)
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in dec.state_dict().items()]
    assert got == rows
    assert dec.decoder_norm is dec.decoder.norm
    assert all(m is dec.decoder.bbox_embed[0] for m in dec.decoder.bbox_embed)
    assert sum(p.numel() for p in dec.parameters()) == 14_547_668


# ---------------------------------------------------------------------- box_ops
def test_mask2box_hand_made_masks():
    logits = torch.full((1, 3, 4, 5), -1.0)
    logits[0, 0, 1:3, 2:5] = 2.0  # rows 1..2, cols 2..4
    logits[0, 1, 3, 0] = 0.5  # single pixel at (y=3, x=0)
    # mask 2 is empty (all <= 0, including exact zeros)
    logits[0, 2, 0, 0] = 0.0
    boxes = mask2box(logits)
    # detrex: x0=2, x1=4 -> cx=3, w=2; y0=1, y1=2 -> cy=1.5, h=1; divided by (w=5, h=4)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([3 / 5, 1.5 / 4, 2 / 5, 1 / 4]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.0, 3 / 4, 0.0, 0.0]))
    # empty: x_min = y_min = 1e8, x_max = y_max = 0 (detrex)
    torch.testing.assert_close(boxes[0, 2], torch.tensor([5e7 / 5, 5e7 / 4, -1e8 / 5, -1e8 / 4]))
    fallback = torch.rand(1, 3, 4)
    with_fb = mask2box(logits, fallback_boxes=fallback)
    torch.testing.assert_close(with_fb[0, :2], boxes[0, :2])
    torch.testing.assert_close(with_fb[0, 2], fallback[0, 2])
    with pytest.raises(ValueError, match="fallback_boxes"):
        mask2box(logits, fallback_boxes=torch.rand(1, 2, 4))


def test_box_sine_embedding_hand_computed():
    box = torch.tensor([[0.25, 0.5, 0.125, 0.75]])
    f = 4
    emb = box_sine_embedding(box, num_pos_feats=f)
    assert emb.shape == (1, 16)
    t = [10000 ** (2 * (i // 2) / f) for i in range(f)]

    def block(c):
        return [math.sin(2 * math.pi * c / t[i]) if i % 2 == 0 else math.cos(2 * math.pi * c / t[i])
                for i in range(f)]

    expected = block(0.5) + block(0.25) + block(0.125) + block(0.75)  # (y, x, w, h)
    torch.testing.assert_close(emb[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)
    pts = box_sine_embedding(box[:, :2], num_pos_feats=f)
    torch.testing.assert_close(pts[0], torch.tensor(block(0.5) + block(0.25)), atol=1e-6, rtol=1e-6)


def test_inverse_sigmoid():
    x = torch.tensor([-0.5, 0.0, 0.2, 0.5, 0.9, 1.0, 2.0])
    y = inverse_sigmoid(x)
    eps = 1e-5
    expected = torch.tensor([math.log(eps / 1), math.log(eps / 1), math.log(0.2 / 0.8), 0.0,
                             math.log(0.9 / 0.1), math.log(1 / eps), math.log(1 / eps)])
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[2:5].sigmoid(), x[2:5])


# ---------------------------------------------------------------------- denoising
def test_dn_attention_mask_groups():
    m = dn_attention_mask(single_pad=2, scalar=3, num_queries=2)
    assert m.shape == (8, 8)
    # matching queries see only matching queries
    assert m[6:, :6].all() and not m[6:, 6:].any()
    # a dn group sees itself and the matching queries, not other groups
    assert not m[2:4, 2:4].any() and not m[2:4, 6:].any()
    assert m[2:4, :2].all() and m[2:4, 4:6].all()


def test_training_forward_with_denoising(tiny):
    dec, feats, mask_features, _ = tiny
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])}]
    dec.train()
    try:
        torch.manual_seed(3)
        out, mask_dict = dec(feats, mask_features, targets=targets)
    finally:
        dec.eval()
    scalar = 100 // 2
    assert mask_dict["scalar"] == scalar and mask_dict["pad_size"] == 2 * scalar
    assert out["pred_logits"].shape == (1, dec.num_queries, dec.num_classes)
    known = mask_dict["output_known_lbs_bboxes"]
    assert known["pred_logits"].shape == (1, 2 * scalar, dec.num_classes)
    assert len(known["aux_outputs"]) == len(out["aux_outputs"]) == 3
    # initial prediction of dn queries: boxes are the noised gt boxes (within noise_scale of the gt)
    init_boxes = known["aux_outputs"][0]["pred_boxes"][0].view(scalar, 2, 4)
    gt = targets[0]["boxes"]
    assert ((init_boxes - gt).abs() <= 0.4 * torch.cat([gt[:, 2:], gt[:, 2:]], 1) + 1e-5).all()
    loss = out["pred_logits"].sum() + known["pred_masks"].sum()
    loss.backward()
    assert dec.label_enc.weight.grad.abs().sum() > 0
    dec.zero_grad(set_to_none=True)


def test_prepare_for_dn_no_objects():
    emb = torch.nn.Embedding(5, 8)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    assert prepare_for_dn(empty, emb, dn_num=10, noise_scale=0.4, num_classes=5, num_queries=3) is None


def test_padding_masks_give_valid_ratios_and_invalid_proposals(tiny):
    dec, feats, _, _ = tiny
    masks = []
    for f in feats:
        m = torch.zeros(f.shape[0], f.shape[2], f.shape[3], dtype=torch.bool)
        m[:, :, f.shape[3] // 2 + 1:] = True  # right part padded
        masks.append(m)
    with torch.no_grad():
        bundle = dec.prepare_memory(feats, masks)
        output_memory, _, coords = dec.encode_tokens(bundle)
    widths = bundle.spatial_shapes[:, 1].float()  # decoder order (reversed)
    expected_w = (widths // 2 + 1) / widths
    torch.testing.assert_close(bundle.valid_ratios[0, :, 0], expected_w)
    torch.testing.assert_close(bundle.valid_ratios[0, :, 1], torch.ones(4))
    padded = bundle.padding_mask[0]
    assert padded.any() and torch.isinf(coords[0, padded]).all()
    # padded tokens are zeroed before enc_output: all padded tokens share the same output
    assert torch.allclose(output_memory[0, padded], output_memory[0, padded][:1].expand(int(padded.sum()), -1))


def test_decode_under_bf16_autocast_is_finite(tiny):
    dec, feats, mask_features, ref = tiny
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bundle = dec.prepare_memory(feats)
        out = dec.decode(ref["decoder_init_tgt"], ref["decoder_init_refpoints_unsigmoid"], bundle, mask_features)
    assert out.hs_prenorm_last.dtype == torch.float32  # the decoder layers run in float32
    assert all(torch.isfinite(x.float()).all() for x in out.pred_logits + out.pred_masks + out.pred_boxes)
    torch.testing.assert_close(out.hs_prenorm_last, ref["decoder_layer_outputs_prenorm"][-1], atol=0.1, rtol=0.1)


def test_look_forward_twice_gradient_paths(tiny):
    dec, feats, mask_features, ref = tiny
    bundle = dec.prepare_memory(feats)
    tgt = ref["decoder_init_tgt"].clone().requires_grad_(True)
    out = dec.decode(tgt, ref["decoder_init_refpoints_unsigmoid"], bundle, mask_features)
    # the refined reference of layer 0 feeds layer 1 detached ...
    g_hs, = torch.autograd.grad(out.hs_prenorm[1].sum(), out.references[1], allow_unused=True, retain_graph=True)
    assert g_hs is None
    # ... but layer 1's predicted boxes see it with its graph (detrex's undetached reference list).
    g_box, = torch.autograd.grad(out.pred_boxes[2].sum(), out.references[1], retain_graph=True)
    assert g_box.abs().sum() > 0
    g_tgt, = torch.autograd.grad(out.pred_boxes[-1].sum(), tgt)
    assert g_tgt.abs().sum() > 0


def test_default_initialisation_matches_detrex_statistics(maskdino_reference_dir):
    """detrex's init (before the fixture's perturbation): constants exactly, random tensors by range and spread."""
    stats = json.loads((maskdino_reference_dir / "tiny_init_stats.json").read_text())
    torch.manual_seed(0)
    dec = MaskDINODecoder(**_decoder_kwargs(maskdino_reference_dir))
    checked_random = 0
    for name, value in dec.state_dict().items():
        ref = stats[PREFIX + name]
        v = value.double()
        if ref["std"] == 0.0 or name.endswith("sampling_offsets.bias"):  # zeros / ones / the offset ring
            assert abs(v.mean().item() - ref["mean"]) < 1e-6 and abs(v.max().item() - ref["max"]) < 1e-6, name
            assert abs(v.min().item() - ref["min"]) < 1e-6, name
            continue
        if v.numel() >= 1000:  # large enough for the extremes and the spread to be tight
            bound = max(abs(ref["min"]), abs(ref["max"]))
            assert v.abs().max().item() <= bound * 1.02, f"{name}: outside detrex's init range {bound:.4g}"
            assert abs(v.std().item() - ref["std"]) < 0.05 * ref["std"], f"{name}: std {v.std().item():.4g}"
            checked_random += 1
    assert checked_random >= 10


def test_prepare_for_dn_layout_two_images():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(5, 8)
    targets = [
        {"labels": torch.tensor([1, 4]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.2, 0.3, 0.1, 0.1]])},
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.7, 0.6, 0.3, 0.2]])},
    ]
    dn = prepare_for_dn(targets, emb, dn_num=7, noise_scale=0.0, num_classes=5, num_queries=4)
    scalar, single = 3, 2  # 7 // max(2, 1)
    assert dn.mask_dict["scalar"] == scalar and dn.mask_dict["pad_size"] == scalar * single
    assert dn.tgt.shape == (2, 6, 8) and dn.refpoints_unsig.shape == (2, 6, 4)
    assert dn.attn_mask.shape == (10, 10)
    for g in range(scalar):
        # without noise: exact label embeddings and inverse-sigmoid boxes, group g at g*single + j
        torch.testing.assert_close(dn.tgt[0, g * single: g * single + 2], emb.weight[[1, 4]])
        torch.testing.assert_close(dn.refpoints_unsig[0, g * single: g * single + 2].sigmoid(), targets[0]["boxes"])
        torch.testing.assert_close(dn.tgt[1, g * single], emb.weight[2])
        # image 1 has one object: its second slot in every group is zero padding
        assert not dn.tgt[1, g * single + 1].any() and not dn.refpoints_unsig[1, g * single + 1].any()
    known_labels, known_boxes = dn.mask_dict["known_lbs_bboxes"]
    assert known_labels.tolist() == [1, 4, 2] * scalar
    assert dn.mask_dict["map_known_indice"].tolist() == [0, 1, 0, 2, 3, 2, 4, 5, 4]

    torch.manual_seed(1)
    noisy = prepare_for_dn(targets, emb, dn_num=300, noise_scale=0.4, num_classes=5, num_queries=4)
    boxes = noisy.refpoints_unsig[0].view(150, 2, 4)[:, 0].sigmoid()
    gt = targets[0]["boxes"][0]
    lim = 0.4 * torch.cat([gt[2:] / 2, gt[2:]])
    assert ((boxes - gt).abs() <= lim + 1e-5).all() and ((boxes - gt).abs() > 1e-3).any()
    changed = (noisy.tgt[0].view(150, 2, 8)[:, 0] - emb.weight[1]).abs().sum(-1) > 0
    assert 0.05 < changed.float().mean().item() < 0.35  # p(relabel) = 0.2, minus draws of the same class
