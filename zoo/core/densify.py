"""Densification and pruning of free Gaussians with gsplat's ``DefaultStrategy`` inside Lightning.

gsplat's strategies (pure torch; they import and run on CPU) grow, split and prune Gaussians by
replacing each parameter with a new, resized ``nn.Parameter`` and by moving the Adam moments of
its optimizer along. They expect ``optimizers: Dict[name, Optimizer]`` with *one optimizer per
parameter, each with one param group*. A LightningModule has one optimizer holding every group,
so this module bridges the two:

* :class:`GaussianParameters` is an ``nn.ParameterDict`` of per-Gaussian attributes
  (``means [N,3]``, ``scales [N,3]`` (log), ``quats [N,4]`` (wxyz), ``opacities [N]`` (logit), any
  extra ``[N, ...]`` features). Assigning a new parameter to a key (what gsplat does) registers it
  on the module. Loading a state dict whose ``N`` differs (a checkpoint taken after densification)
  resizes the parameters *before* copying, keeping each ``Parameter`` object, so
  ``load_state_dict`` works from a freshly built module and Lightning can build the optimizer
  afterwards.
* :func:`group_views` gives gsplat a dict of :class:`GroupView` objects, one per attribute: the
  shared optimizer's param group that holds exactly that attribute, and the shared optimizer's
  ``state``. gsplat's ops then swap the parameter inside *that* group of the one Lightning
  optimizer and move its moments (new rows get zero moments), so the optimizer, its lr scheduler
  (which holds the same group dicts) and the module always agree.
* :class:`Densifier` owns the strategy and its running state (screen-space gradient sums and
  counts, saved in checkpoints), merges the render meta of several images of one step, and applies
  the opacity reset itself: gsplat 1.5.3's ``step_post_backward`` tests
  ``step % reset_every == 0 & step > 0``, which Python reads as a chained comparison that is never
  true, so its reset never fires. The reset uses gsplat's own ``reset_opa`` op.

Meta comes from :func:`zoo.core.render.rasterize` (either backend, unpacked): ``means2d
[C,N,2]`` (``retain_grad`` is called by :meth:`Densifier.before_backward`), ``radii [C,N,2]``,
``width``, ``height``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["GaussianParameters", "GroupView", "group_views", "Densifier", "REQUIRED_KEYS"]

#: Attributes gsplat's DefaultStrategy needs (log scales, wxyz quaternions, logit opacities).
REQUIRED_KEYS = ("means", "scales", "quats", "opacities")


class GaussianParameters(nn.ParameterDict):
    """Per-Gaussian parameters that a state dict of another Gaussian count can be loaded into.

    Args:
        params: name -> tensor, every one with the same leading size ``N``; must include
            ``means [N,3]``, ``scales [N,3]`` (log), ``quats [N,4]`` (wxyz) and ``opacities [N]``
            (logit).

    Raises:
        ValueError: a required attribute is missing or the leading sizes differ.
    """

    def __init__(self, params: Mapping[str, Tensor]):
        missing = [k for k in REQUIRED_KEYS if k not in params]
        if missing:
            raise ValueError(f"GaussianParameters needs {', '.join(REQUIRED_KEYS)}; missing {', '.join(missing)}")
        sizes = {k: int(v.shape[0]) for k, v in params.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every Gaussian attribute needs the same leading size N, got {sizes}")
        super().__init__({k: v if isinstance(v, nn.Parameter) else nn.Parameter(v) for k, v in params.items()})

    @property
    def num(self) -> int:
        """The number of Gaussians ``N``."""
        return int(self["means"].shape[0])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # resize in place (same Parameter objects) so that the copy below succeeds
        for name, param in self.items():
            incoming = state_dict.get(prefix + name)
            if incoming is None or tuple(incoming.shape) == tuple(param.shape):
                continue
            if tuple(incoming.shape[1:]) != tuple(param.shape[1:]):
                error_msgs.append(f"{prefix}{name}: per-Gaussian shape {tuple(incoming.shape[1:])} in the checkpoint, "
                                  f"{tuple(param.shape[1:])} in the model")
                continue
            param.data = torch.empty(incoming.shape, dtype=param.dtype, device=param.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class GroupView:
    """One param group of a shared optimizer, seen as a one-group optimizer (what gsplat expects).

    ``param_groups`` is ``[group]`` (the shared optimizer's own dict, so replacing
    ``group["params"]`` changes the shared optimizer) and ``state`` is the shared optimizer's state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, group: Dict[str, Any]):
        self.optimizer = optimizer
        self.param_groups = [group]

    @property
    def state(self):
        return self.optimizer.state


def group_views(optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter]) -> Dict[str, GroupView]:
    """One :class:`GroupView` per trainable parameter of ``params``.

    Args:
        optimizer: the shared optimizer (a LightningOptimizer is unwrapped).
        params: name -> parameter; each trainable one must be the only parameter of one group.

    Raises:
        ValueError: a parameter is in no group, or shares its group with other parameters.
    """
    optimizer = getattr(optimizer, "optimizer", optimizer)
    owner = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            owner[id(p)] = group
    views = {}
    for name, p in params.items():
        if not p.requires_grad:
            continue
        group = owner.get(id(p))
        if group is None:
            raise ValueError(f"Gaussian attribute {name!r} is in no param group of the optimizer")
        if len(group["params"]) != 1:
            raise ValueError(f"Gaussian attribute {name!r} shares its param group with {len(group['params']) - 1} other "
                             "parameters; densification needs one group per attribute")
        views[name] = GroupView(optimizer, group)
    return views


class Densifier:
    """gsplat ``DefaultStrategy`` driven by the zoo renderer's meta, for one shared optimizer.

    Args:
        scene_scale: the scene extent the 3D scale thresholds are relative to.
        reset_opacity: opacity (post-sigmoid) the periodic reset clamps every Gaussian to.
        **strategy_kwargs: ``gsplat.strategy.DefaultStrategy`` fields (``grow_grad2d``,
            ``grow_scale3d``, ``prune_opa``, ``prune_scale3d``, ``refine_start_iter``,
            ``refine_stop_iter``, ``refine_every``, ``reset_every``, ``pause_refine_after_reset``,
            ...). ``reset_every`` also schedules the opacity reset (while ``step <
            refine_stop_iter``, as in 3DGS).
    """

    def __init__(self, scene_scale: float = 1.0, reset_opacity: float = 0.01, **strategy_kwargs: Any):
        from gsplat.strategy import DefaultStrategy

        self.strategy = DefaultStrategy(**strategy_kwargs)
        self.state = self.strategy.initialize_state(scene_scale=float(scene_scale))
        self.reset_opacity = float(reset_opacity)
        self._metas: List[Dict[str, Any]] = []

    # -------------------------------------------------------------------- per step
    def before_backward(self, meta: Dict[str, Any]) -> None:
        """Keep the screen-space gradient of one rendered image (``meta`` of one ``rasterize`` call)."""
        if not meta["means2d"].requires_grad:
            return
        meta["means2d"].retain_grad()
        self._metas.append(meta)

    def clear(self) -> None:
        """Forget the metas kept since the last step (e.g. after a step that was not trained)."""
        self._metas = []

    def merged_info(self) -> Optional[Dict[str, Any]]:
        """The kept metas as one unpacked gsplat info (cameras stacked), or None when none has a gradient."""
        metas = [m for m in self._metas if m["means2d"].grad is not None]
        if not metas:
            return None
        grads = torch.cat([m["means2d"].grad.reshape(-1, *m["means2d"].shape[-2:]) for m in metas])
        radii = torch.cat([m["radii"].reshape(-1, *m["radii"].shape[-2:]) for m in metas])
        return {"means2d": SimpleNamespace(grad=grads, absgrad=grads.abs()), "radii": radii,
                "width": metas[0]["width"], "height": metas[0]["height"], "n_cameras": int(grads.shape[0]),
                "gaussian_ids": None}

    def step(self, params: GaussianParameters, optimizer: torch.optim.Optimizer, step: int,
             accumulate: bool = True) -> bool:
        """Run the strategy after the optimizer step of iteration ``step``.

        Args:
            params: the Gaussians (parameters are replaced in place when the count changes).
            optimizer: the shared optimizer holding one group per attribute.
            step: the iteration just finished (1-based, as 3DGS counts).
            accumulate: add this step's screen-space gradients to the statistics (False while the
                Gaussians are still frozen, e.g. before a warm-up).

        Returns:
            True when the Gaussians were changed (grown, split, pruned or opacity-reset).
        """
        from gsplat.strategy.ops import reset_opa

        info = self.merged_info()
        self._metas = []
        s = self.strategy
        if step >= s.refine_stop_iter or not accumulate:
            return False
        device = params["means"].device
        for key, value in self.state.items():  # restored from a checkpoint on another device
            if torch.is_tensor(value) and value.device != device:
                self.state[key] = value.to(device)
        if not self.matches(params.num):  # statistics of another Gaussian set (e.g. an older checkpoint)
            for key in ("grad2d", "count", "radii"):
                if key in self.state:
                    self.state[key] = None
        before = params.num
        changed = False
        if info is not None:
            s.step_post_backward(params, group_views(optimizer, params), self.state, step, info, packed=False)
            # a refinement may grow and prune the same number: any refinement counts as a change
            refined = (step > s.refine_start_iter and step % s.refine_every == 0
                       and step % s.reset_every >= s.pause_refine_after_reset)
            changed = refined or params.num != before
        if params.num == 0:
            raise RuntimeError(f"densification at step {step} pruned every Gaussian (opacity below "
                               f"{s.prune_opa}); pause refinement longer after an opacity reset")
        if step % s.reset_every == 0 and step > 0:
            reset_opa(params, group_views(optimizer, params), self.state, value=self.reset_opacity)
            changed = True
        return changed

    # -------------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """The running statistics (tensors cloned)."""
        return {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in self.state.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.state = {k: v for k, v in state.items()}
        self._metas = []

    def matches(self, n: int) -> bool:
        """Whether the statistics are sized for ``n`` Gaussians (or not started yet)."""
        g = self.state.get("grad2d")
        return g is None or int(g.shape[0]) == int(n)
