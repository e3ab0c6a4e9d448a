"""AvatarModule: what every avatar method shares.

A method subclasses `AvatarModule` and implements three things:

* `render_batch(batch, background) -> dict` with `rgb [B,3,H,W]`, `alpha [B,1,H,W]` and optionally
  `depth [B,1,H,W]` plus whatever its losses need;
* `loss_terms(batch, out, gt) -> dict[str, Tensor]` of already weighted scalar terms;
* `param_groups() -> list[dict]` of optimizer groups (`params`, `lr`, `name`; optional
  `lr_lambda(step)` multiplier, `schedule: False` to keep the lr fixed, `sparse: True` for
  embeddings with sparse gradients, optimised by SparseAdam).

Everything else — the training/validation/test steps, loss composition with every term logged,
metrics (PSNR, SSIM, LPIPS on the full image and on the person crop, as the dataset's protocol
says), image logging (render | ground truth | error), the resolved config stored in every
checkpoint, learning-rate schedules, and novel-pose rendering from a pose file — lives here.

Conventions: images `[B,3,H,W]` in [0,1]; ground truth is composited on the training background
with the dataset mask; `batch["index"]` is the frame's position in the training sequence (or -1 for
a frame the method never saw, e.g. a novel pose), used by per-frame embeddings.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from zoo.core.losses import LPIPSLoss
from zoo.core.metrics import EvalProtocol, evaluate_images
from zoo.methods.common import SyncedMeans

BODY_POSE_KEYS = ("global_orient", "body_pose", "transl", "jaw_pose", "leye_pose", "reye_pose",
                  "left_hand_pose", "right_hand_pose", "expression")


class NonFiniteError(RuntimeError):
    """Training met non-finite losses or gradients too many steps in a row (the message names the
    loss term or parameter and the frames)."""


def schedule_value(spec: Any, step: int) -> float:
    """Evaluate a scheduled scalar.

    Args:
        spec: a number, or a mapping with `value` (or `start`/`end` values), optional `from_step`
            (0 before it), `ramp_steps` (linear ramp from `start` to `end` over those steps after
            `from_step`), `decay` ("linear" | "exp") between `start` and `end`.
        step: the global step.

    Returns:
        The value at `step`.
    """
    if spec is None:
        return 0.0
    if isinstance(spec, (int, float)):
        return float(spec)
    spec = dict(spec)
    if step < int(spec.get("from_step", 0)):
        return 0.0
    if "value" in spec:
        return float(spec["value"])
    start, end = float(spec["start"]), float(spec["end"])
    steps = max(int(spec.get("ramp_steps", 1)), 1)
    t = min(max(step - int(spec.get("from_step", 0)), 0) / steps, 1.0)
    if spec.get("decay", "linear") == "exp" and start > 0 and end > 0:
        return float(start * (end / start) ** t)
    return float(start + (end - start) * t)


def composite(image: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Composite `image [B,3,H,W]` over `background [3]` with `mask [B,1,H,W]`."""
    return image * mask + (1.0 - mask) * background.view(1, 3, 1, 1)


class AvatarModule(L.LightningModule):
    """Base LightningModule of every avatar method.

    Args:
        cfg: the method config (configs/method/<name>.yaml plus deltas), a DictConfig or a dict.
        data_info: what the method must know about its training sequence (see
            `zoo.runner.data_info`): subject, model_type, gender, betas, frame_ids, height, width,
            protocol, test_splits, body_models, data.
    """

    method_name: str = "base"

    def __init__(self, cfg: DictConfig | Mapping, data_info: Optional[Mapping] = None):
        super().__init__()
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(dict(cfg))
        self.cfg = cfg
        self.data_info: Dict[str, Any] = dict(data_info or {})
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True), "data_info": self.data_info})
        proto = self.data_info.get("protocol") or {}
        self.protocol = EvalProtocol(**proto) if proto else EvalProtocol()
        bg = self.cfg.get("background", "black")
        self.train_background = bg
        # LPIPS for the loss and for the protocol's metric: parameter-free wrappers of the shared
        # frozen networks (nothing in the state dict); built now so missing weights fail early
        self.lpips = LPIPSLoss(net=str(self.cfg.get("lpips_net", "alex")))
        self.lpips_metric = LPIPSLoss(net=self.protocol.lpips_net)
        # validation / test means: torchmetrics MeanMetrics reduced across DDP ranks (SyncedMeans)
        self._val_acc = SyncedMeans()
        self._test_accs: Dict[str, SyncedMeans] = {}
        self.test_results: Dict[str, Dict[str, float]] = {}
        self.test_split_names: Sequence[str] = tuple(self.data_info.get("test_splits", ("test",)))
        self.image_dir: Optional[Path] = None
        self.max_logged_images = int(self.cfg.get("log_images", 4))
        frame_ids = list(self.data_info.get("frame_ids", []))
        self.register_buffer("_frame_ids", torch.tensor(frame_ids or [0], dtype=torch.long), persistent=True)

    REQUIRED_METHODS = ("render_batch", "loss_terms", "param_groups")

    def __init_subclass__(cls, **kwargs):
        """Refuse a method class that does not implement the method interface (see module doc)."""
        super().__init_subclass__(**kwargs)
        missing = [m for m in cls.REQUIRED_METHODS if not callable(getattr(cls, m, None))]
        if missing and not cls.__dict__.get("abstract", False):
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)} (see zoo.methods.base)")

    # ------------------------------------------------------------------ shared helpers
    @property
    def step(self) -> int:
        """The training step schedules and stages read: the Trainer's global step, unless pinned
        with `pin_step` (tests and analyses that need a given stage without training to it)."""
        pinned = getattr(self, "_pinned_step", None)
        return int(self.global_step) if pinned is None else int(pinned)

    def pin_step(self, step: Optional[int]) -> None:
        """Pin `step` to a value (None: follow the Trainer again)."""
        self._pinned_step = step

    def weight(self, name: str) -> float:
        """The (scheduled) weight `cfg.loss.<name>` at the current step."""
        return schedule_value(self.cfg.loss.get(name), self.step)

    def frame_slot(self, batch: Dict[str, Any]) -> torch.Tensor:
        """Position of each batch frame among the training sequence's frame ids, -1 if unseen.

        Per-frame embeddings are indexed by this slot; novel-pose frames get -1.
        """
        fid = torch.as_tensor(batch["frame_id"], device=self._frame_ids.device).view(-1, 1)
        hit = fid == self._frame_ids.view(1, -1)
        slot = hit.float().argmax(dim=1)
        return torch.where(hit.any(dim=1), slot, torch.full_like(slot, -1))

    def background_color(self, training: bool) -> torch.Tensor:
        """The background colour `[3]`: the protocol's at evaluation, the config's in training."""
        if not training:
            bg = self.protocol.background if self.protocol.background is not None else (0.0, 0.0, 0.0)
            return torch.tensor(bg, dtype=torch.float32, device=self.device)
        choice = self.train_background
        if choice == "random":
            return torch.rand(3, device=self.device)
        table = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}
        if isinstance(choice, str):
            if choice not in table:
                raise ValueError(f"method.background must be black, white, random or an RGB triple, got {choice!r}")
            return torch.tensor(table[choice], device=self.device)
        return torch.tensor(list(choice), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ Lightning steps
    def forward(self, batch: Dict[str, Any], background: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if background is None:
            background = self.background_color(training=False)
        return self.render_batch(batch, background)

    # ------------------------------------------------------------------ non-finite guard
    def _frames_of(self, batch: Mapping[str, Any]) -> str:
        fids = torch.as_tensor(batch.get("frame_id", [])).view(-1).tolist()
        cids = torch.as_tensor(batch.get("camera_id", [])).view(-1).tolist()
        return ", ".join(f"frame {int(f)} camera {int(c)}" for f, c in zip(fids, cids)) or "unknown frames"

    def _non_finite(self, what: str, batch: Mapping[str, Any]) -> None:
        """Count a skipped step; stop the run after `max_nonfinite_steps` in a row."""
        self._nonfinite_streak = getattr(self, "_nonfinite_streak", 0) + 1
        limit = int(self.cfg.get("max_nonfinite_steps", 5))
        message = f"non-finite {what} at step {int(self.global_step)} ({self._frames_of(batch)})"
        if self._nonfinite_streak >= limit:
            raise NonFiniteError(f"{message}: {self._nonfinite_streak} steps in a row were skipped "
                                 f"(method.max_nonfinite_steps={limit}); stopping before anything non-finite "
                                 "is written. Check the named frames' poses, cameras and images.")
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"{message}: step skipped ({self._nonfinite_streak}/{limit} in a row)")

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> Optional[torch.Tensor]:
        """Render, compose the loss terms, log each; a non-finite loss skips the step (returns None)."""
        bg = self.background_color(training=True)
        out = self.render_batch(batch, bg)
        gt = composite(batch["image"], batch["mask"], bg)
        terms = self.loss_terms(batch, out, gt)
        if not terms:
            raise RuntimeError(f"{type(self).__name__}.loss_terms returned no terms")
        bad = [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()]
        self._guard_batch = batch
        if bad:
            self._non_finite(f"loss term(s) {', '.join(bad)}", batch)
            return None
        total = torch.stack([t.reshape(()) for t in terms.values()]).sum()
        bs = int(batch["image"].shape[0])
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value.detach(), batch_size=bs, on_step=True, on_epoch=False)
        self.log("train/loss", total.detach(), batch_size=bs, prog_bar=True, on_step=True, on_epoch=False)
        with torch.no_grad():
            mse = torch.mean((out["rgb"].detach().clamp(0, 1) - gt) ** 2)
            self.log("train/psnr", -10.0 * torch.log10(mse.clamp_min(1e-10)), batch_size=bs, prog_bar=True)
        return total

    def _evaluate(self, batch: Dict[str, Any]) -> tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], torch.Tensor]:
        bg = self.background_color(training=False)
        out = self.render_batch(batch, bg)
        pred = out["rgb"].clamp(0, 1)
        scores = evaluate_images(pred, batch["image"], batch["mask"], self.protocol, lpips=self.lpips_metric)
        return out, scores, pred

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        with torch.no_grad():
            _, scores, pred = self._evaluate(batch)
        self._val_acc.update(scores, n=int(pred.shape[0]), device=self.device)
        if batch_idx == 0:
            self.log_images("val", batch, pred)

    def on_validation_epoch_end(self) -> None:
        # reduced over every rank already (each item counted once): logged as it is
        for key, value in self._val_acc.compute().items():
            self.log(f"val/{key}", value, prog_bar=key in ("psnr", "psnr_crop"), sync_dist=True)  # equal on every rank
        self._val_acc.reset()

    def test_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        names = list(self.test_split_names)
        split = names[dataloader_idx] if dataloader_idx < len(names) else f"test{dataloader_idx}"
        with torch.no_grad():
            _, scores, pred = self._evaluate(batch)
        self.test_metrics(split).update(scores, n=int(pred.shape[0]), device=self.device)
        if self.image_dir is not None:
            self.save_images(self.image_dir / split, batch, pred)
        elif batch_idx == 0:
            self.log_images(split, batch, pred)

    def test_metrics(self, split: str) -> SyncedMeans:
        """The accumulator of one test split's metric values (reduced over DDP ranks)."""
        return self._test_accs.setdefault(split, SyncedMeans())

    def on_test_epoch_end(self) -> None:
        splits = list(self._test_accs)
        if self._ranks() > 1:  # every rank computes every split any rank scored, in one order (collectives)
            import torch.distributed as dist

            gathered: List[Any] = [None] * self._ranks()
            dist.all_gather_object(gathered, splits)
            order = list(self.test_split_names)
            splits = sorted(set().union(*map(set, gathered)),
                            key=lambda name: (order.index(name) if name in order else len(order), name))
        for split in splits:
            acc = self.test_metrics(split)
            values = acc.compute()
            self.test_results[split] = values
            for key, value in values.items():
                self.log(f"{split}/{key}", value, add_dataloader_idx=False, sync_dist=True)  # equal on every rank
        self._test_accs = {}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if any(p.requires_grad for p in g["params"])]
        # per-frame embeddings with sparse gradients: SparseAdam, stepped in on_after_backward, so
        # rows of frames outside the batch keep still (dense Adam's momentum would drift them)
        sparse = [{"params": g["params"], "lr": g["lr"], "name": g.get("name")} for g in groups if g.get("sparse")]
        groups = [g for g in groups if not g.pop("sparse", False)]
        self._sparse_optimizer = None
        if sparse:
            self._sparse_optimizer = torch.optim.SparseAdam(sparse)
            pending = getattr(self, "_pending_sparse_state", None)
            if pending is not None:
                self._sparse_optimizer.load_state_dict(pending)
                self._pending_sparse_state = None
        if not groups:
            raise RuntimeError(f"{type(self).__name__} has no trainable parameters")
        # per-group extras stay out of the optimizer (its state dict must pickle)
        extras = [(g.pop("lr_lambda", None), bool(g.pop("schedule", True))) for g in groups]
        opt_cfg = self.cfg.get("optim", {})
        optimizer = torch.optim.Adam(groups, eps=float(opt_cfg.get("eps", 1e-15)))
        total = int(self.cfg.get("max_steps", 0)) or int(getattr(self.trainer, "max_steps", 0) or 0)
        kind = opt_cfg.get("schedule", "none")
        if kind not in ("none", "step", "exp"):
            raise ValueError(f"method.optim.schedule must be none, step or exp, got {kind!r}")
        milestones = [int(total * m) for m in opt_cfg.get("milestones", (1 / 3, 2 / 3))]
        gamma = float(opt_cfg.get("gamma", 0.33))
        final = float(opt_cfg.get("final_ratio", 0.01))

        def global_factor(step: int) -> float:
            if kind == "step" and total > 0:
                return gamma ** sum(step >= m for m in milestones)
            if kind == "exp" and total > 0:
                return final ** min(step / total, 1.0)
            return 1.0

        def make(own, scheduled):
            return lambda step: (global_factor(step) if scheduled else 1.0) * (own(step) if own else 1.0)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [make(own, sch) for own, sch in extras])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _sparse_params(self) -> List[torch.nn.Parameter]:
        return [p for g in self.param_groups() if g.get("sparse") for p in g["params"] if p.requires_grad]

    def setup(self, stage: str) -> None:
        """Under DDP the sparse per-frame embeddings stay out of DDP's reducer (it cannot reduce a
        sparse gradient a step leaves undefined); `on_after_backward` averages them across ranks."""
        trainer = self._trainer
        if trainer is None or int(trainer.world_size) <= 1:
            return
        sparse = {id(p) for p in self._sparse_params()}
        names = [n for n, p in self.named_parameters() if id(p) in sparse]
        if names:
            from torch.nn.parallel import DistributedDataParallel

            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, names)

    def _reduce_sparse_grads(self) -> None:
        """DDP: average the sparse embedding gradients over the ranks (as dense tables; the rows
        some rank touched stay in the sparse gradient SparseAdam steps)."""
        import torch.distributed as dist

        world = self._ranks()
        for p in self._sparse_params():
            dense = p.grad.to_dense() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(dense)
            p.grad = (dense / world).to_sparse(sparse_dim=1)

    def on_after_backward(self) -> None:
        """Check the gradients, then step the sparse per-frame optimizer (if any).

        A non-finite gradient anywhere skips the whole step: every gradient is dropped (Adam leaves
        parameters without a gradient untouched), so nothing non-finite reaches the parameters."""
        if getattr(self, "_sparse_optimizer", None) is not None and self._ranks() > 1:
            self._reduce_sparse_grads()
        named = [(n, p) for n, p in self.named_parameters() if p.grad is not None]
        bad = [n for n, p in named
               if not torch.isfinite(p.grad.coalesce().values() if p.grad.is_sparse else p.grad).all()]
        opt = getattr(self, "_sparse_optimizer", None)
        if bad:
            for _, p in named:
                p.grad = None
            self._non_finite(f"gradient of {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}",
                             getattr(self, "_guard_batch", {}))
            return
        self._nonfinite_streak = 0
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        opt = getattr(self, "_sparse_optimizer", None)
        if opt is not None:
            checkpoint["sparse_optimizer"] = opt.state_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # applied when configure_optimizers builds the sparse optimizer on resume
        self._pending_sparse_state = checkpoint.get("sparse_optimizer")

    # ------------------------------------------------------------------ images
    def _ranks(self) -> int:
        trainer = self._trainer
        return int(trainer.world_size) if trainer is not None else 1

    def log_images(self, tag: str, batch: Dict[str, Any], pred: torch.Tensor) -> None:
        """Log render | ground truth | error for the first frames to the logger (and to disk; DDP: rank 0)."""
        if self._trainer is not None and not self._trainer.is_global_zero:
            return
        gt = composite(batch["image"], batch["mask"], self.background_color(training=False))
        n = min(self.max_logged_images, pred.shape[0])
        if n == 0:
            return
        err = (pred[:n] - gt[:n]).abs().mean(dim=1, keepdim=True).clamp(0, 1).expand(-1, 3, -1, -1)
        rows = torch.cat([pred[:n], gt[:n], err], dim=3)  # [n,3,H,3W]
        grid = torch.cat(list(rows), dim=1)  # [3, nH, 3W]
        img = (grid.permute(1, 2, 0).detach().cpu().numpy() * 255).round().astype(np.uint8)
        logger = self.logger
        if logger is None:
            return
        if hasattr(logger, "log_image"):
            logger.log_image(key=f"{tag}/render_gt_error", images=[img], step=int(self.global_step))
        log_dir = getattr(logger, "log_dir", None) or getattr(self.trainer, "default_root_dir", None)
        if log_dir:
            from PIL import Image

            out = Path(log_dir) / "images"
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / f"{tag}_step{int(self.global_step):07d}.png")

    def save_images(self, folder: Path, batch: Dict[str, Any], pred: torch.Tensor) -> None:
        """Write each rendered frame as `<folder>/frame{frame_id}_cam{camera_id}.png`."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        fids = torch.as_tensor(batch["frame_id"]).view(-1).tolist()
        cids = torch.as_tensor(batch["camera_id"]).view(-1).tolist()
        for img, fid, cid in zip(pred, fids, cids):
            arr = (img.permute(1, 2, 0).detach().cpu().numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(folder / f"frame{int(fid):06d}_cam{int(cid):02d}.png")

    # ------------------------------------------------------------------ animation
    @torch.no_grad()
    def render_poses(self, poses: Mapping[str, np.ndarray | torch.Tensor], K: torch.Tensor, w2c: torch.Tensor,
                     height: int, width: int, betas: Optional[torch.Tensor] = None,
                     background: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
        """Render the avatar in novel poses.

        Args:
            poses: body parameters with a leading frame axis T (global_orient [T,3], body_pose,
                transl [T,3], ...), e.g. loaded from a pose .npz file.
            K: [3,3] or [T,3,3] intrinsics; w2c: [4,4] or [T,4,4] OpenCV world-to-camera.
            height, width: image size.
            betas: [S] shape; the training subject's betas when None.
            background: RGB in [0,1].

        Returns:
            [T,3,H,W] images in [0,1].
        """
        self.eval()
        tensors = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=self.device)
                   for k, v in poses.items() if k in BODY_POSE_KEYS}
        if "body_pose" not in tensors:
            raise ValueError(f"pose data needs at least 'body_pose'; got keys {sorted(poses)}")
        T = tensors["body_pose"].shape[0]
        if betas is None:
            betas = torch.as_tensor(self.data_info.get("betas", [0.0] * 10), dtype=torch.float32)
        betas = torch.as_tensor(betas, dtype=torch.float32, device=self.device).view(1, -1)
        K = torch.as_tensor(K, dtype=torch.float32, device=self.device)
        w2c = torch.as_tensor(w2c, dtype=torch.float32, device=self.device)
        bg = torch.tensor(list(background), dtype=torch.float32, device=self.device)
        frames = []
        for t in range(T):
            body = {k: v[t:t + 1] for k, v in tensors.items()}
            body.setdefault("global_orient", torch.zeros(1, 3, device=self.device))
            body.setdefault("transl", torch.zeros(1, 3, device=self.device))
            body["betas"] = betas
            batch = {
                "image": torch.zeros(1, 3, height, width, device=self.device),
                "mask": torch.zeros(1, 1, height, width, device=self.device),
                "K": (K[t] if K.dim() == 3 else K).view(1, 3, 3),
                "w2c": (w2c[t] if w2c.dim() == 3 else w2c).view(1, 4, 4),
                "frame_id": torch.tensor([-1], device=self.device),
                "camera_id": torch.tensor([0], device=self.device),
                "index": torch.tensor([-1], device=self.device),
                "body": body,
            }
            frames.append(self.render_batch(batch, bg)["rgb"].clamp(0, 1))
        return torch.cat(frames, dim=0)

    def render(self, body: Mapping[str, Any], cameras: Any,
               background: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
        """Render one frame's body parameters from every camera of `cameras`.

        Args:
            body: `global_orient [3]`, `body_pose [3J]`, `transl [3]` (a leading axis of 1 is
                allowed; missing orient/transl are zero, betas default to the model's subject).
            cameras: a :class:`zoo.core.camera.Cameras` with C cameras of one image size.
            background: RGB in [0,1].

        Returns:
            [C,3,H,W] images in [0,1], one per camera, in the cameras' order.
        """
        from zoo.core.camera import Cameras

        if not isinstance(cameras, Cameras):
            raise TypeError(f"render: cameras must be a zoo.core.camera.Cameras, got {type(cameras).__name__}")
        C = len(cameras)
        poses = {}
        for k, v in body.items():
            if k not in BODY_POSE_KEYS:
                continue
            arr = np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float32).reshape(-1)
            poses[k] = np.repeat(arr[None], C, axis=0)
        betas = body.get("betas")
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float32).reshape(-1)
        kwargs = {} if betas is None else {"betas": betas}
        return self.render_poses(poses, cameras.K, cameras.w2c, cameras.height, cameras.width,
                                 background=background, **kwargs)


def load_pose_file(path: str | Path) -> Dict[str, np.ndarray]:
    """Read a pose sequence (.npz with global_orient/body_pose/transl[/betas], or an
    InstantAvatar-style `thetas` [T,72] + `transl`).

    Raises:
        FileNotFoundError: missing file. ValueError: no usable pose arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose file not found: {path}")
    data = dict(np.load(path, allow_pickle=False))
    if "thetas" in data and "body_pose" not in data:
        thetas = np.asarray(data.pop("thetas"), dtype=np.float32)
        if thetas.ndim != 2 or thetas.shape[1] < 6:
            raise ValueError(f"{path}: 'thetas' must be [T, 72], got {thetas.shape}")
        data["global_orient"], data["body_pose"] = thetas[:, :3], thetas[:, 3:]
    if "poses" in data and "body_pose" not in data:
        poses = np.asarray(data.pop("poses"), dtype=np.float32)
        data["global_orient"], data["body_pose"] = poses[:, :3], poses[:, 3:]
    if "body_pose" not in data:
        raise ValueError(f"{path}: expected 'body_pose' (or 'thetas'/'poses') arrays, found {sorted(data)}")
    T = np.asarray(data["body_pose"]).shape[0]
    for key in ("global_orient", "transl"):
        arr = np.asarray(data.get(key, np.zeros((T, 3), np.float32)))
        if arr.shape != (T, 3):
            raise ValueError(f"{path}: '{key}' must be [{T}, 3], got {arr.shape}")
        data[key] = arr
    return data
