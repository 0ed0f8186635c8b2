"""Training / evaluation entry-point helpers (used by ``scripts/train_net.py`` and the configs).

* :mod:`.overrides` -- :func:`apply_overrides_strict` (unknown keys are errors, SPEC §5).
* :mod:`.device`    -- the ``${l2g_device:}`` resolver and device checks (registered on import).
* :mod:`.freeze`    -- ``train.trainable_params`` patterns.
* :mod:`.optim`     -- optimizer parameter groups (freezing + backbone lr factor).
* :mod:`.schedule`  -- multi-step schedule with milestones as fractions of ``train.max_iter``.
* :mod:`.ema`       -- model EMA (detrex's ``train.model_ema``).
* :mod:`.trainer`   -- trainers, hooks, writers, ``do_train`` / ``do_test`` / ``do_eval_only``.
"""

from .device import default_device, register_resolvers, resolve_device
from .freeze import apply_trainable_params, count_parameters, matches_any
from .overrides import OverrideError, apply_overrides_strict

__all__ = [
    "apply_overrides_strict",
    "OverrideError",
    "apply_trainable_params",
    "count_parameters",
    "matches_any",
    "default_device",
    "resolve_device",
    "register_resolvers",
]
