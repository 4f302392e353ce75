"""The training loop: model/optimiser/schedule setup, epochs, checkpoints, signals, NaN guard, early stop."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from train import checkpoint as ckpt_io
from train.config import Config
from train.distributed import DistEnv, all_reduce_max, all_reduce_sum, barrier, gather_objects
from train.evaluate import EvalResult, evaluate
from train.report import write_metrics

log = logging.getLogger("train")


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, path: Path) -> None:
        self.signum, self.path = signum, path
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved to {path}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; no checkpoint was written for that state."""


class SignalFlag:
    """Installs SIGINT/SIGTERM handlers that only record the signal; `restore()` puts the old ones back."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            print(f"\n{signal.Signals(signum).name}: finishing the current step, then saving", file=sys.stderr)
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class State:
    """Progress that goes into checkpoints besides the module/optimiser states."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # batches of `epoch` already done
    global_step: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0  # 1-based; 0: none yet
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, count
    train_seconds: float = 0.0
    train_images: int = 0


def make_optimizer(cfg: Config, params: Any) -> torch.optim.Optimizer:
    """RAdam/Adam (coupled L2), AdamW (decoupled) or SGD with momentum; multi-tensor (foreach) updates,
    which torch picks by default on CUDA only (2-3x faster steps on CPU)."""
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, **kw)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **kw)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    return torch.optim.SGD(params, momentum=cfg.momentum, **kw)


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> Any:
    """Per-epoch schedule: ReduceLROnPlateau on (100 - best val acc), ExponentialLR, or None."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    return None


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """N / (C * count_c) per class (0 for absent classes)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.divide(labels.size, num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(w, dtype=torch.float32)


def autocast_factory(cfg: Config, device: torch.device) -> Callable[[], Any]:
    """A zero-argument context-manager factory for the chosen mixed precision."""
    if cfg.amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


class Trainer:
    """Owns the model, optimiser, schedule and loaders of one run; `fit()` trains, `load_best()` selects."""

    def __init__(
        self,
        cfg: Config,
        env: DistEnv,
        net: nn.Module,
        class_names: tuple[str, ...],
        loaders: dict[str, Any],
        out: Path,
        train_labels: np.ndarray,
        replay_on_resume: bool = False,
    ) -> None:
        """`replay_on_resume`: the train loader's augmentation stream runs on across epochs (DALI), so a
        resumed run first replays the earlier epochs' batches (data only) to reach the same stream state."""
        self.cfg, self.env, self.net, self.class_names = cfg, env, net, class_names
        self.loaders, self.out = loaders, out
        self.num_classes = len(class_names)
        self.device = env.device
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        model: nn.Module = net
        if env.distributed:
            if cfg.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.net = net = model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            model = torch.compile(model)
        self.model = model
        self.optimizer = make_optimizer(cfg, net.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.autocast = autocast_factory(cfg, self.device)
        weight = class_weights(train_labels, self.num_classes).to(self.device) if cfg.class_weighted else None
        self.weight = weight
        self.state = State()
        self._resume_rng: dict[str, Any] | None = None
        self._replay = False
        self.replay_on_resume = replay_on_resume
        self.signals: SignalFlag | None = None

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything needed to continue (and to rebuild the model elsewhere)."""
        cfg, s = self.cfg, self.state
        return {
            "format": ckpt_io.FORMAT_VERSION,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": s.epoch,
            "step": s.step,
            "global_step": s.global_step,
            "best_metric": s.best_acc,
            "best_epoch": s.best_epoch,
            "bad_epochs": s.bad_epochs,
            "history": list(s.history),
            "partial": list(s.partial),
            "train_seconds": s.train_seconds,
            "train_images": s.train_images,
            "rng": rng,
            "world_size": self.env.world_size,
            "config": cfg.to_dict(),
            "model_name": cfg.model,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "dda_stages": list(cfg.dda_stages),
            "dda_options": cfg.dda_options,
            "dropout": cfg.dropout,
            "image_size": cfg.image_size,
            "normalize": cfg.normalize,
            "recipe": cfg.recipe,
            "dataset": cfg.dataset,
        }

    def save(self, name: str) -> Path:
        """Gather every rank's RNG state and write out/<name> from rank 0 (all ranks must call)."""
        rng = gather_objects(ckpt_io.rng_state(), self.env)
        path = self.out / name
        if self.env.is_main:
            ckpt_io.save_atomic(self.checkpoint(rng), path)
        return path

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint written by `save`; RNG states are applied when the loop reaches that point."""
        if ckpt["model_name"] != self.cfg.model or ckpt["num_classes"] != self.num_classes:
            raise ckpt_io.CheckpointError(
                f"checkpoint is {ckpt['model_name']} with {ckpt['num_classes']} classes, "
                f"run is {self.cfg.model} with {self.num_classes}"
            )
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        s = self.state
        s.epoch, s.step, s.global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
        s.best_acc, s.best_epoch, s.bad_epochs = ckpt["best_metric"], ckpt["best_epoch"], ckpt["bad_epochs"]
        s.history = list(ckpt["history"])
        s.train_seconds, s.train_images = ckpt["train_seconds"], ckpt["train_images"]
        # the partial-epoch sums were reduced over ranks when saved: rank 0 carries them
        s.partial = list(ckpt["partial"]) if self.env.is_main else [0.0, 0.0, 0.0]
        self._replay = self.replay_on_resume and (s.epoch > 0 or s.step > 0)
        rngs = ckpt["rng"]
        if ckpt["world_size"] == self.env.world_size:
            self._resume_rng = rngs[self.env.rank]
        else:
            log.warning(
                f"checkpoint was written by {ckpt['world_size']} processes, this run has "
                f"{self.env.world_size}: RNG streams are not restored (the run is not bitwise-resumable)"
            )

    def load_best(self) -> None:
        """Put the selected (best validation) weights into the model on every rank."""
        barrier(self.env)
        if self.env.is_main:
            self.net.load_state_dict(ckpt_io.load(self.out / "best.pt", self.device)["model"])
        if self.env.distributed:
            for t in self.net.state_dict().values():
                dist.broadcast(t, src=0)

    # ---- training ----------------------------------------------------------------------------
    def _stop(self, signum: int) -> None:
        path = self.save("last.pt")
        raise StopRequested(signum, path)

    def _record_seen(self, x: torch.Tensor, epoch: int) -> None:
        """--debug-seen: append one content hash per training image (with --augment none: a sample id)."""
        path = Path(f"{self.cfg.debug_seen}.rank{self.env.rank}")
        arr = x.detach().float().cpu().numpy()
        with open(path, "a", encoding="utf-8") as fh:
            for img in arr:
                fh.write(f"{epoch} {hashlib.sha1(img.tobytes()).hexdigest()[:20]}\n")

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, bool]:
        """One optimisation step; returns (detached per-step sums [loss, correct, count], stop requested)."""
        cfg = self.cfg
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.weight)
        if cfg.debug_nan_at_step is not None and self.state.global_step + 1 == cfg.debug_nan_at_step:
            loss = loss * float("nan")
        flags = torch.stack(
            [
                (~torch.isfinite(loss.detach())).float(),
                torch.tensor(float(self.signals.signum if self.signals else 0), device=loss.device),
            ]
        )
        bad, signum = all_reduce_max(flags, self.env).tolist()
        if bad:
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch + 1}, step {step + 1} (global step {self.state.global_step + 1}); "
                f"stopped without saving this state; last good checkpoint: {self.out / 'last.pt'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            n = y.shape[0]
            correct = (logits.argmax(1) == y).sum()
            sums = torch.stack([loss.detach().double() * n, correct.double(), torch.tensor(float(n)).double()])
        return sums, int(signum)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, s, env = self.cfg, self.state, self.env
        loader = self.loaders["train"]
        if self._replay:
            self._replay = False
            log.info(f"resume: replaying the input pipeline's first {epoch} epoch(s) (no training)")
            for k in range(epoch):
                loader.set_epoch(k)
                for _ in loader:
                    pass
        loader.set_epoch(epoch)
        skip = s.step
        if self._resume_rng is not None and skip == 0:
            ckpt_io.set_rng_state(self._resume_rng)
            self._resume_rng = None
        it = iter(loader)
        for _ in range(skip):  # resume mid-epoch: replay the seeded order up to the saved step
            next(it)
        if self._resume_rng is not None:
            ckpt_io.set_rng_state(self._resume_rng)
            self._resume_rng = None
        sums = torch.tensor(s.partial, dtype=torch.float64, device=self.device)
        bar = tqdm(
            total=len(loader),
            initial=skip,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            file=sys.stderr,
            disable=not (env.is_main and cfg.progress),
            leave=False,
            dynamic_ncols=True,
        )
        start, images, last_post = time.perf_counter(), 0, 0.0
        try:
            for i, (x, y) in enumerate(it, start=skip):
                if cfg.debug_seen:
                    self._record_seen(x, epoch)
                step_sums, signum = self._step(x, y, epoch, i)
                sums += step_sums.to(sums.device)
                images += y.shape[0] * env.world_size
                s.step, s.global_step = i + 1, s.global_step + 1
                bar.update(1)
                now = time.perf_counter()
                if bar.disable is False and now - last_post > 0.5:
                    last_post = now
                    loss_sum, correct, count = sums.tolist()
                    bar.set_postfix(
                        loss=f"{loss_sum / max(count, 1):.4f}",
                        acc=f"{100 * correct / max(count, 1):.2f}",
                        img_s=f"{images / (now - start):.1f}",
                    )
                if cfg.debug_wait_at_step == s.global_step:
                    self._debug_wait()
                if signum:
                    s.partial = all_reduce_sum(sums.clone(), env).tolist()
                    s.train_seconds += time.perf_counter() - start
                    s.train_images += images
                    self._stop(signum)
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        s.train_seconds += seconds
        s.train_images += images
        loss_sum, correct, count = all_reduce_sum(sums, env).tolist()
        s.partial = [0.0, 0.0, 0.0]
        return {
            "train_loss": loss_sum / max(count, 1),
            "train_acc": 100.0 * correct / max(count, 1),
            "train_images_per_s": images / seconds if seconds > 0 else 0.0,
            "train_seconds": seconds,
        }

    def _debug_wait(self) -> None:
        """--debug-wait-at-step: announce the step on stdout and wait (up to 120 s) for a signal."""
        if self.env.is_main:
            print(f"debug-wait {self.state.global_step}", flush=True)
        deadline = time.monotonic() + 120
        while not (self.signals and self.signals.signum) and time.monotonic() < deadline:
            time.sleep(0.01)

    def validate(self) -> EvalResult:
        return evaluate(
            self.model,
            self.loaders["val"],
            env=self.env,
            num_classes=self.num_classes,
            autocast=self.autocast,
            channels_last=self.cfg.channels_last,
        )

    def fit(self) -> str:
        """Train until the epoch limit or early stop; returns "completed" or "early-stopped".

        Raises StopRequested (after saving last.pt) on SIGINT/SIGTERM and NonFiniteLoss on a NaN/inf loss.
        """
        cfg, s, env = self.cfg, self.state, self.env
        self.signals = SignalFlag()
        try:
            while s.epoch < cfg.epochs:
                if cfg.early_stop and s.bad_epochs >= cfg.early_stop:
                    log.info(f"early stop: no validation improvement for {cfg.early_stop} epochs")
                    return "early-stopped"
                epoch = s.epoch
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
                row.update(self._train_epoch(epoch))
                val = self.validate()
                row.update(val_loss=val.loss, val_acc=val.accuracy, val_seconds=val.seconds)
                improved = val.accuracy > s.best_acc
                if improved:
                    s.best_acc, s.best_epoch, s.bad_epochs = val.accuracy, epoch + 1, 0
                else:
                    s.bad_epochs += 1
                row.update(best_val_acc=s.best_acc, best_epoch=s.best_epoch)
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(100.0 - s.best_acc)
                elif self.scheduler is not None:
                    self.scheduler.step()
                s.history.append(row)
                s.epoch, s.step = epoch + 1, 0
                if improved:
                    self.save("best.pt")
                self.save("last.pt")
                if env.is_main:
                    write_metrics(self.out / "metrics.jsonl", s.history)
                    log.info(
                        f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
                        f"acc {row['train_acc']:.2f}% | val loss {val.loss:.4f} acc {val.accuracy:.2f}% "
                        f"(best {s.best_acc:.2f}% @ {s.best_epoch}) | {row['train_images_per_s']:.1f} img/s"
                    )
                signum = int(all_reduce_max(torch.tensor([float(self.signals.signum)], device=self.device), env))
                if signum:
                    raise StopRequested(signum, self.out / "last.pt")
            return "completed"
        finally:
            self.signals.restore()
