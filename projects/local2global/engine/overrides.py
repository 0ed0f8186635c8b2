"""Strict command-line overrides for LazyConfig files.

detectron2's ``LazyConfig.apply_overrides`` silently creates any key it is given, so a typo such as
``train.max_iters=10`` trains for the default number of iterations without a word. :func:`apply_overrides_strict`
accepts the same ``key=value`` strings (parsed by hydra-core's override parser when it is installed, exactly as
detectron2 does: ``null`` is Python ``None``, the string ``None`` is a string) but rejects (SPEC §5):

* a key that neither exists in the config nor is a parameter of the ``_target_`` callable of the node it belongs
  to (``inspect.signature``; a target taking ``**kwargs`` accepts any name). The error lists close matches;
* a key below a value that is not a config (``model.aligner.num_layers=2`` after ``model.aligner=null``);
* a cheap type mismatch against the current value: a number overridden by a non-numeric string or a bool,
  a bool by a non-bool, a list by a scalar, a config node by a scalar other than ``null``.

Interpolated values (``"${..hidden_dim}"``) are not type-checked: overriding one replaces the interpolation.
A key can still be created on purpose with hydra's ``+`` prefix (``+train.my_flag=true``).

Example::

    cfg = LazyConfig.load("configs/local2global_tiny_synthetic.py")
    apply_overrides_strict(cfg, ["train.max_iter=100", "model.aligner=null"])
"""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["OverrideError", "ConfigError", "apply_overrides_strict", "check_config", "parse_overrides",
           "target_parameters", "TRAIN_KEYS", "LEGACY_KEY_ALIASES", "resolve_legacy_key"]

logger = logging.getLogger(__name__)

_MISSING = object()


class OverrideError(ValueError):
    """A command-line override names a key that does not exist or gives a value of the wrong type."""


def parse_overrides(overrides: Sequence[str]) -> List[Tuple[str, Any, str]]:
    """Parse ``key=value`` strings into ``(key, value, kind)`` with ``kind`` in ``{"change", "add"}``.

    Uses hydra-core's override grammar when available (as detectron2's ``apply_overrides``); otherwise splits on
    the first ``=`` and evaluates the value with ``ast.literal_eval`` (``null`` still means ``None``).

    Raises:
        OverrideError: for deletions (``~key``) and strings without ``=``.
    """
    overrides = list(overrides or [])
    for o in overrides:
        if "=" not in o and not o.startswith("~"):
            hint = " (command-line options such as --resume must come before the overrides)" \
                if o.startswith("--") else ""
            raise OverrideError(f"override {o!r} is not of the form key=value{hint}")
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
    except ImportError:  # pragma: no cover - hydra-core is a pinned dependency
        OverridesParser = None
    out = []
    if OverridesParser is not None:
        for o in OverridesParser.create().parse_overrides(overrides):
            if o.is_delete():
                raise OverrideError(f"deleting keys (~{o.key_or_group}) is not supported by config overrides")
            out.append((o.key_or_group, o.value(), "add" if o.is_add() else "change"))
        return out
    for o in overrides:  # pragma: no cover - fallback without hydra
        if o.startswith("~"):
            raise OverrideError(f"deleting keys ({o}) is not supported by config overrides")
        kind = "add" if o.startswith("+") else "change"
        key, value = o.lstrip("+").split("=", 1)
        if value == "null":
            value = None
        else:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        out.append((key.strip(), value, kind))
    return out


def target_parameters(target: Any) -> Optional[List[str]]:
    """Names of the keyword parameters of a ``_target_`` (callable or dotted string).

    Returns:
        the parameter names, or ``None`` when the callable accepts ``**kwargs`` or cannot be inspected
        (then any name is accepted).
    """
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:  # noqa: BLE001 - an unimportable target cannot be inspected: accept anything
            return None
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return names


def _all_paths(node: Any, prefix: str = "", depth: int = 0) -> Iterable[str]:
    """Every dotted key path of a config (for close-match suggestions)."""
    if depth > 12:
        return
    if isinstance(node, DictConfig):
        for k in node.keys():
            path = f"{prefix}{k}"
            yield path
            try:
                child = node._get_node(k)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _all_paths(child, path + ".", depth + 1)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            path = f"{prefix}{i}"
            yield path
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _all_paths(child, path + ".", depth + 1)


def _suggest(cfg: DictConfig, key: str, local_names: Sequence[str], prefix: str) -> str:
    part = key.split(".")[len(prefix.split(".")) if prefix else 0]
    local = difflib.get_close_matches(part, list(local_names), n=5, cutoff=0.6)
    cands = [f"{prefix}.{m}" if prefix else m for m in local]
    for m in difflib.get_close_matches(key, list(_all_paths(cfg)), n=5, cutoff=0.75):
        if m not in cands:
            cands.append(m)
    if cands:
        return "Did you mean: " + ", ".join(cands[:6]) + "?"
    shown = sorted(str(n) for n in local_names)
    return f"Valid keys at '{prefix or '<root>'}': " + (", ".join(shown[:40]) + (" ..." if len(shown) > 40 else ""))


def _raw_child(node: DictConfig, name: str):
    """(exists, child node object) without resolving interpolations."""
    if name not in node:
        return False, None
    return True, node._get_node(name)


def _check_type(key: str, old_node: Any, new: Any) -> Any:
    """Raise for cheap-to-detect type mismatches between the current value node and the new value.

    Returns:
        the value to set (an integer-valued float for an integer key becomes an int).
    """
    if new is None or old_node is None:
        return new
    if getattr(old_node, "_is_interpolation", lambda: False)():
        return new
    if isinstance(old_node, DictConfig):
        if old_node._is_none():
            return new
        if not isinstance(new, dict):
            what = f"a LazyCall of {old_node.get('_target_')}" if "_target_" in old_node else "a config node"
            hint = " (write null for None)" if new == "None" else ""
            raise OverrideError(f"override {key}={new!r}: '{key}' is {what}; it can only be replaced by a "
                                f"dict or null{hint}")
        return new
    if isinstance(old_node, ListConfig):
        if old_node._is_none():
            return new
        if not isinstance(new, (list, tuple)):
            raise OverrideError(f"override {key}={new!r}: '{key}' is a list; give a list, e.g. {key}=[a,b]")
        return new
    old = old_node._value() if hasattr(old_node, "_value") else old_node
    if old is None or isinstance(old, str) and old.startswith("${"):
        return new
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise OverrideError(f"override {key}={new!r}: '{key}' is a bool ({old}); give true or false")
    elif isinstance(old, (int, float)):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise OverrideError(
                f"override {key}={new!r}: '{key}' is a number ({old!r}), got {type(new).__name__} {new!r}"
            )
        if isinstance(old, int) and isinstance(new, float):
            if new.is_integer():
                return int(new)  # train.max_iter=1e5 -> 100000, not 100000.0 (range() needs an int)
            logger.warning("override %s=%r replaces the integer %r by a float", key, new, old)
    elif isinstance(old, (list, tuple)) and not isinstance(new, (list, tuple)):
        raise OverrideError(f"override {key}={new!r}: '{key}' is a list; give a list, e.g. {key}=[a,b]")
    return new


def _validate(cfg: DictConfig, key: str, value: Any) -> Any:
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        last = i == len(parts) - 1
        if isinstance(node, ListConfig):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise OverrideError(f"override {key}: '{prefix}' is a list of length {len(node)}; "
                                    f"'{part}' is not a valid index")
            child = node._get_node(int(part))
        elif isinstance(node, DictConfig):
            if node._is_none():
                raise OverrideError(f"override {key}: '{prefix}' is None; set it to a config before setting "
                                    f"its keys")
            exists, child = _raw_child(node, part)
            if not exists:
                params = target_parameters(node["_target_"]) if "_target_" in node else []
                if params is None or part in params:
                    if not last:
                        raise OverrideError(
                            f"override {key}: '{prefix}.{part}' is a parameter of {node['_target_']} that the "
                            f"config does not set; set it as a whole ({prefix}.{part}=...) instead of its sub-keys"
                        )
                    return value
                names = list(node.keys()) + [p for p in (params or []) if p not in node]
                where = f"of {node['_target_']}" if "_target_" in node else "in the config"
                raise OverrideError(
                    f"override {key}={value!r}: no key '{part}' at '{prefix or '<root>'}' (neither a config key "
                    f"nor a parameter {where}). {_suggest(cfg, key, names, prefix)}"
                )
        else:
            raise OverrideError(f"override {key}: '{prefix}' is a {type(node).__name__} value "
                                f"({node!r}), not a config with keys")
        if last:
            return _check_type(key, child, value)
        if getattr(child, "_is_interpolation", lambda: False)():
            raise OverrideError(
                f"override {key}: '{'.'.join(parts[:i + 1])}' is the interpolation {child._value()!r}; override "
                f"the key it refers to, or replace it as a whole"
            )
        if isinstance(child, (DictConfig, ListConfig)):
            node = child
        else:
            node = child._value() if hasattr(child, "_value") else child
            if node is None:
                raise OverrideError(f"override {key}: '{'.'.join(parts[:i + 1])}' is None; set it to a config "
                                    f"before setting its keys")
    return value


#: Keys of the model before the tracker sub-package existed -> their place now. An override of an old key is
#: rewritten (with a warning) when the config has the new key and not the old one, so old command lines and sweep
#: files keep working.
LEGACY_KEY_ALIASES = {
    "model.aligner": "model.tracker.aligner",
    "model.global_pos": "model.tracker.global_pos",
    "model.first_frame": "model.tracker.first_frame",
}


def resolve_legacy_key(cfg: DictConfig, key: str) -> str:
    """``key`` rewritten by :data:`LEGACY_KEY_ALIASES` when only its new name exists in ``cfg``."""
    for old, new in LEGACY_KEY_ALIASES.items():
        if key != old and not key.startswith(old + "."):
            continue
        parent_new = new.rsplit(".", 1)[0]
        has_old = OmegaConf.select(cfg, old, default=_MISSING) is not _MISSING
        parent = OmegaConf.select(cfg, parent_new, default=None)
        if not has_old and OmegaConf.is_config(parent) and new.rsplit(".", 1)[1] in parent:
            renamed = new + key[len(old):]
            logger.warning("override %s: the key is now %s (the tracker owns it); applying it there", key, renamed)
            return renamed
    return key


def apply_overrides_strict(cfg: DictConfig, overrides: Optional[Sequence[str]]) -> DictConfig:
    """Apply ``key=value`` overrides in place, rejecting unknown keys and obvious type errors.

    Args:
        cfg: a LazyConfig (``omegaconf.DictConfig``).
        overrides: strings such as ``["train.max_iter=10", "model.aligner=null", "+train.extra=1"]``;
            applied in order (a later override sees the effect of an earlier one).

    Returns:
        ``cfg`` (modified in place), as ``LazyConfig.apply_overrides``.

    Raises:
        OverrideError: naming the offending override, with close matches for mistyped keys.
    """
    for key, value, kind in parse_overrides(overrides):
        key = resolve_legacy_key(cfg, key)
        if kind != "add":
            value = _validate(cfg, key, value)
        _safe_update(cfg, key, value)
        logger.debug("override %s=%r", key, value)
    return cfg


def _safe_update(cfg: DictConfig, key: str, value: Any) -> None:
    parts = key.split(".")
    for idx in range(1, len(parts)):
        prefix = ".".join(parts[:idx])
        v = OmegaConf.select(cfg, prefix, default=None)
        if v is None:
            break
        if not OmegaConf.is_config(v):
            raise OverrideError(f"trying to update key {key}, but {prefix} is a {type(v).__name__}, not a config")
    OmegaConf.update(cfg, key, value, merge=True)


class ConfigError(ValueError):
    """A config file with an unknown key or a value of the wrong type (the message names the key)."""


#: the ``train`` keys read by the trainer (detrex's ``configs/common/train.py`` plus ``trainable_params``)
TRAIN_KEYS = ("output_dir", "init_checkpoint", "max_iter", "amp", "ddp", "clip_grad", "model_ema", "fast_dev_run",
              "checkpointer", "eval_period", "log_period", "wandb", "seed", "device", "trainable_params", "eval_only")
_TRAIN_TYPES = {"max_iter": int, "eval_period": int, "log_period": int, "seed": int, "output_dir": str,
                "init_checkpoint": str, "device": str, "checkpointer.period": int, "checkpointer.max_to_keep": int}


def _check_lazy_keys(node: Any, path: str, errors: List[str], depth: int = 0) -> None:
    """Every key of a ``_target_`` node must be a parameter of the target (unless it takes ``**kwargs``)."""
    if depth > 20:
        return
    if isinstance(node, DictConfig):
        keys = [str(k) for k in node.keys()]
        if "_target_" in keys:
            target = node._get_node("_target_")._value()
            params = target_parameters(target)
            if params is not None:
                name = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
                for k in keys:
                    if k != "_target_" and k not in params:
                        near = difflib.get_close_matches(k, params, n=3, cutoff=0.6)
                        hint = f" Did you mean: {', '.join(f'{path}.{m}' for m in near)}?" if near else ""
                        errors.append(f"unknown key '{path}.{k}': {name} has no parameter {k!r}.{hint}")
        for k in keys:
            child = node._get_node(k)
            if isinstance(child, (DictConfig, ListConfig)):
                _check_lazy_keys(child, f"{path}.{k}" if path else k, errors, depth + 1)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                _check_lazy_keys(child, f"{path}.{i}", errors, depth + 1)


def check_config(cfg: DictConfig, source: str = "the config") -> None:
    """Reject config files with unknown keys or wrongly typed training options, before anything is written.

    Checked: the keys of every ``LazyCall`` node against its target's parameters (``model.foo = 1`` for a model
    without ``foo``), the ``train`` keys against :data:`TRAIN_KEYS`, and the types of the integer / string
    ``train`` options (``train.max_iter`` a positive integer, ...).

    Raises:
        ConfigError: listing every offending key (with close matches), naming ``source``.
    """
    errors: List[str] = []
    for section in ("model", "dataloader", "optimizer", "lr_multiplier"):
        if section in cfg:
            node = cfg._get_node(section)
            if isinstance(node, (DictConfig, ListConfig)):
                _check_lazy_keys(node, section, errors)
    train = cfg.get("train", None) if isinstance(cfg, DictConfig) else None
    if isinstance(train, DictConfig):
        for k in train.keys():
            if k not in TRAIN_KEYS:
                near = difflib.get_close_matches(str(k), TRAIN_KEYS, n=3, cutoff=0.6)
                hint = f" Did you mean: {', '.join('train.' + m for m in near)}?" if near else ""
                errors.append(f"unknown key 'train.{k}' (the trainer reads {', '.join(TRAIN_KEYS)}).{hint}")
        for key, typ in _TRAIN_TYPES.items():
            value = OmegaConf.select(train, key, default=_MISSING, throw_on_missing=False)
            if value is _MISSING or value is None:
                continue
            ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
            if typ is int and isinstance(value, float) and value.is_integer():
                ok = True
            if not ok:
                errors.append(f"'train.{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}")
            elif key == "max_iter" and value <= 0:
                errors.append(f"'train.max_iter' must be positive, got {value!r}")
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
