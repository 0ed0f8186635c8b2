"""Strict command-line overrides (SPEC §5): valid keys, rejected typos with suggestions, null, type errors."""

import pytest
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from omegaconf import DictConfig, OmegaConf

from local2global.engine.overrides import OverrideError, apply_overrides_strict, target_parameters

pytestmark = pytest.mark.timeout(60)


class Block:
    def __init__(self, width: int = 8, depth: int = 2, act: str = "relu", dropout: float = 0.0):
        self.width, self.depth, self.act, self.dropout = width, depth, act, dropout


class Net:
    def __init__(self, block=None, head=None, hidden: int = 16, extra_flag: bool = False):
        self.block, self.head, self.hidden, self.extra_flag = block, head, hidden, extra_flag


def anything(**kwargs):
    return kwargs


def make_cfg() -> DictConfig:
    cfg = OmegaConf.create(flags={"allow_objects": True})
    cfg.model = L(Net)(
        block=L(Block)(width="${..hidden}", depth=2),
        head=L(anything)(a=1),
        hidden=16,
    )
    cfg.train = dict(max_iter=100, lr=1e-4, amp=dict(enabled=False), init_checkpoint="", milestones=[0.5, 0.8],
                     device="cpu")
    cfg.augs = [L(Block)(width=1), L(Block)(width=2)]
    return cfg


def test_valid_overrides_are_applied():
    cfg = make_cfg()
    apply_overrides_strict(cfg, [
        "train.max_iter=7", "train.lr=0.5", "train.amp.enabled=true", "model.block.depth=5",
        "train.milestones=[0.25,0.75]", "augs.1.width=9", "train.init_checkpoint=path/to/w.pth",
    ])
    assert cfg.train.max_iter == 7 and cfg.train.lr == 0.5 and cfg.train.amp.enabled is True
    assert cfg.model.block.depth == 5 and list(cfg.train.milestones) == [0.25, 0.75] and cfg.augs[1].width == 9
    assert cfg.train.init_checkpoint == "path/to/w.pth"
    net = instantiate(cfg.model)
    assert net.block.depth == 5


def test_parameter_of_target_not_in_config_is_valid():
    cfg = make_cfg()
    assert "act" not in cfg.model.block
    apply_overrides_strict(cfg, ["model.block.act=gelu", "model.extra_flag=true"])
    net = instantiate(cfg.model)
    assert net.block.act == "gelu" and net.extra_flag is True


def test_kwargs_target_accepts_any_name():
    assert target_parameters(anything) is None
    cfg = make_cfg()
    apply_overrides_strict(cfg, ["model.head.whatever=3"])
    assert instantiate(cfg.model).head == {"a": 1, "whatever": 3}


def test_interpolation_is_followed_and_can_be_replaced():
    cfg = make_cfg()
    apply_overrides_strict(cfg, ["model.hidden=32"])
    assert instantiate(cfg.model).block.width == 32  # derived value follows the override
    apply_overrides_strict(cfg, ["model.block.width=4"])  # replacing an interpolation: no type check
    assert instantiate(cfg.model).block.width == 4
    cfg.train.augs2 = "${augs}"
    with pytest.raises(OverrideError, match="is the interpolation"):
        apply_overrides_strict(cfg, ["train.augs2.0.width=3"])


@pytest.mark.parametrize("override, expected", [
    ("train.max_iters=10", "train.max_iter"),
    ("model.block.dept=3", "model.block.depth"),
    ("train.amp.enable=true", "train.amp.enabled"),
    ("model.hiden=3", "model.hidden"),
])
def test_mistyped_keys_are_rejected_with_close_matches(override, expected):
    cfg = make_cfg()
    before = OmegaConf.to_yaml(cfg)
    with pytest.raises(OverrideError) as e:
        apply_overrides_strict(cfg, [override])
    msg = str(e.value)
    assert override.split("=")[0].split(".")[-1] in msg and expected in msg
    assert OmegaConf.to_yaml(cfg) == before  # nothing was created


def test_unknown_top_level_key_and_bad_list_index():
    cfg = make_cfg()
    with pytest.raises(OverrideError, match="no key 'trian'.*train"):
        apply_overrides_strict(cfg, ["trian.max_iter=3"])
    with pytest.raises(OverrideError, match="list of length 2"):
        apply_overrides_strict(cfg, ["augs.5.width=3"])


def test_plus_prefix_creates_a_key_on_purpose():
    cfg = make_cfg()
    apply_overrides_strict(cfg, ["+train.my_flag=true"])
    assert cfg.train.my_flag is True


def test_null_is_none_and_string_none_is_not():
    cfg = make_cfg()
    apply_overrides_strict(cfg, ["model.block=null"])
    assert cfg.model.block is None and instantiate(cfg.model).block is None
    with pytest.raises(OverrideError, match="is None"):
        apply_overrides_strict(cfg, ["model.block.depth=3"])
    cfg = make_cfg()
    with pytest.raises(OverrideError, match="write null"):
        apply_overrides_strict(cfg, ["model.block=None"])
    apply_overrides_strict(cfg, ["train.init_checkpoint=None"])
    assert cfg.train.init_checkpoint == "None"


@pytest.mark.parametrize("override, pattern", [
    ("train.max_iter=abc", "is a number"),
    ("train.max_iter=true", "is a number"),
    ("train.amp.enabled=3", "is a bool"),
    ("train.milestones=0.5", "is a list"),
    ("model.block=5", "LazyCall"),
    ("train.max_iter.sub=1", "not a config"),
])
def test_type_errors(override, pattern):
    with pytest.raises(OverrideError, match=pattern):
        apply_overrides_strict(make_cfg(), [override])


def test_int_to_float_and_dict_merge_are_allowed():
    cfg = make_cfg()
    apply_overrides_strict(cfg, ["train.max_iter=12.0", "train.lr=1", "train.amp={enabled:true}"])
    assert cfg.train.max_iter == 12 and type(cfg.train.max_iter) is int  # integer-valued float -> int
    assert cfg.train.lr == 1 and cfg.train.amp.enabled is True
    apply_overrides_strict(cfg, ["train.max_iter=1e5"])
    assert cfg.train.max_iter == 100000 and type(cfg.train.max_iter) is int


def test_deletion_is_an_error():
    with pytest.raises(OverrideError, match="not supported"):
        apply_overrides_strict(make_cfg(), ["~train.max_iter"])


def test_real_config_overrides():
    pytest.importorskip("local2global.modeling.segmenter.decoder")
    pytest.importorskip("local2global.data.build")
    cfg = LazyConfig.load("configs/local2global_tiny_synthetic.py")
    apply_overrides_strict(cfg, ["model.tracker.aligner=null", "train.max_iter=5", "model.hidden_dim=32",
                                 "model.criterion.set_criterion.eos_coef=0.2", "train.device=cpu"])
    assert cfg.model.tracker.aligner is None and cfg.model.decoder.hidden_dim == 32 and cfg.train.device == "cpu"
    assert "aligner" not in cfg.model


def test_legacy_model_keys_are_rewritten_to_the_tracker():
    """Command lines of before the tracker sub-package (model.aligner..., model.global_pos) keep working."""
    cfg = LazyConfig.load("configs/local2global_tiny_synthetic.py")
    apply_overrides_strict(cfg, ["model.aligner.dim_feedforward=96", "model.global_pos=static",
                                 "model.first_frame=learned"])
    assert cfg.model.tracker.aligner.dim_feedforward == 96
    assert cfg.model.tracker.global_pos == "static" and cfg.model.tracker.first_frame == "learned"
    assert "global_pos" not in cfg.model and "aligner" not in cfg.model
    apply_overrides_strict(cfg, ["model.aligner=null"])
    assert cfg.model.tracker.aligner is None
    with pytest.raises(OverrideError, match="dim_feedforward"):
        apply_overrides_strict(LazyConfig.load("configs/local2global_tiny_synthetic.py"),
                               ["model.aligner.dim_feedfoward=64"])
    with pytest.raises(OverrideError, match="train.clip_grad"):
        apply_overrides_strict(LazyConfig.load("configs/local2global_tiny_synthetic.py"),
                               ["train.clip_gard.enabled=false"])
