"""The training loop: epochs of optimisation steps, validation, selection, early stop and checkpoints.

Its parts live apart: model wrapping in `train.model_prep`, the checkpoint schema in `train.checkpoint`,
resume seeking in `train.resume`, signals in `train.signals`, --debug-* hooks in `train.debug` and the
progress bar in `train.progress`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ddakern import atomic

from . import checkpoint as ckpt_io
from . import debug
from .checkpoint import State
from .config import Config
from .distributed import DistEnv, all_reduce_max, all_reduce_sum, barrier, gather_objects
from .evaluate import EvalResult, evaluate
from .methods.ema import WeightEMA
from .methods.mixing import BatchMixing
from .methods.sam import frozen_bn_stats, make_sam, restore_weights
from .methods.schedule import make_scheduler, step_scheduler
from .model_prep import prepare_model
from .progress import EpochBar
from .report import write_metrics
from .resume import replay_epochs, seek
from .signals import SignalFlag, StopRequested
from .sources import collect_skips
from .tensorboard_log import EventLog, open_event_log

__all__ = ["NonFiniteLoss", "State", "StopRequested", "Trainer", "autocast_factory"]
log = logging.getLogger("train")


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; no checkpoint was written for that state."""


def make_optimizer(cfg: Config, params: Any) -> tuple[torch.optim.Optimizer, Any]:
    """(optimiser, SAM or None): RAdam/Adam (coupled L2), AdamW (decoupled) or SGD with momentum, multi-tensor
    (foreach) updates, which torch picks by default on CUDA only (2-3x faster steps on CPU); with --sam,
    pytorch-optimizer's SAM/ASAM around it (the optimiser returned is then SAM's base optimiser)."""
    kw: dict[str, Any] = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    classes = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    cls = classes.get(cfg.optimizer, torch.optim.SGD)
    if cls is torch.optim.SGD:
        kw["momentum"] = cfg.momentum
    if cfg.sam == "none":
        return cls(params, **kw), None
    sam = make_sam(cfg.sam, cfg.sam_rho, params, cls, **kw)
    return sam.base_optimizer, sam


def _groups(it: Iterator, n: int) -> Iterator[list]:
    """Consecutive lists of `n` items of `it` (the last may be shorter): the batches of one update."""
    while group := list(itertools.islice(it, n)):
        yield group


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
        checkpoint_extra: dict[str, Any] | None = None,
    ) -> None:
        """`replay_on_resume`: the train loader's augmentation stream runs on across epochs (DALI), so a
        resumed run first replays the earlier epochs' batches (data only) to reach the same stream state.
        `checkpoint_extra`: entries every checkpoint of this run carries besides the schema's."""
        self.cfg, self.env, self.class_names, self.loaders, self.out = cfg, env, class_names, loaders, out
        self.num_classes = len(class_names)
        self.device = env.device
        self.net, self.model = prepare_model(net, cfg, env)
        # the optimiser steps and is scheduled; with --sam, SAM around it (its state is what checkpoints hold)
        self.optimizer, self.sam = make_optimizer(cfg, self.net.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.ema = WeightEMA(self.net, cfg.ema) if cfg.ema is not None else None
        self.mixing = BatchMixing(cfg, self.num_classes, self.device)
        self.events: EventLog | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.autocast = autocast_factory(cfg, self.device)
        self.weight = class_weights(train_labels, self.num_classes).to(self.device) if cfg.class_weighted else None
        self.state = State()
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self._resume_rng: dict[str, Any] | None = None
        self._replay = False
        self.replay_on_resume = replay_on_resume
        self.signals: SignalFlag | None = None
        self._first_bad: torch.Tensor | None = None

    # ---- checkpoints -------------------------------------------------------------------------
    def _components(self) -> dict[str, Any]:
        return dict(
            state=self.state,
            net=self.net,
            optimizer=self.sam if self.sam is not None else self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            ema=self.ema,
        )

    def save(self, name: str, weights: str = "raw") -> Path:
        """Gather every rank's RNG state and write out/<name> from rank 0 (all ranks must call); `weights`:
        which weights go under "model" (best.pt: the selected ones, raw or EMA)."""
        rng = gather_objects(ckpt_io.rng_state(self.env.device), self.env)
        path = self.out / name
        if self.env.is_main:
            ckpt = ckpt_io.build_checkpoint(
                **self._components(),
                rng=rng,
                world_size=self.env.world_size,
                config=self.cfg,
                class_names=self.class_names,
                extra=self.checkpoint_extra,
                weights=weights,
            )
            atomic.torch_save(ckpt, path)
        return path

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint written by `save`; RNG states are applied when the loop reaches that point."""
        self._resume_rng = ckpt_io.restore_checkpoint(
            ckpt,
            **self._components(),
            rank=self.env.rank,
            world_size=self.env.world_size,
            model_name=self.cfg.model,
            num_classes=self.num_classes,
        )
        self._replay = self.replay_on_resume and (self.state.epoch > 0 or self.state.step > 0)

    def load_best(self) -> None:
        """Put the selected (best validation) weights into the model on every rank."""
        barrier(self.env)
        if self.env.is_main:
            self.net.load_state_dict(ckpt_io.load(self.out / "best.pt", self.device)["model"])
        if self.env.distributed:
            for t in self.net.state_dict().values():
                dist.broadcast(t, src=0)

    # ---- training ----------------------------------------------------------------------------
    def _saved_checkpoints(self) -> str:
        """What a user can go back to after a failure: the checkpoints that exist, or that none does."""
        found = [str(self.out / n) for n in ("last.pt", "best.pt") if (self.out / n).is_file()]
        return f"last good checkpoint: {', '.join(found)}" if found else "no checkpoint was saved yet"

    def _note_loss(self, loss: torch.Tensor, step: int) -> None:
        """Remember, on the device and without a sync, the first global step (1-based) whose loss is not finite."""
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad is None:
            self._first_bad = torch.full((), -1.0, device=loss.device)
        step = float(step)  # a Python scalar: a kernel argument, no copy
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)

    def _check(self, epoch: int) -> int:
        """NaN guard and signal check in one collective (the only host-device sync of the loop).

        Runs every --check-every steps and before anything is saved, so a non-finite step is never
        saved: raises NonFiniteLoss naming its step; returns the signal (0: none).
        """
        first_bad = self._first_bad if self._first_bad is not None else torch.full((), -1.0, device=self.device)
        signum = float(self.signals.signum if self.signals else 0)
        # max over ranks: -1 (none) loses against any bad step; the earliest step is in the message only
        flags = torch.stack([first_bad.to(self.device), torch.tensor(signum, device=self.device)])
        bad_step, signum = all_reduce_max(flags, self.env).tolist()
        if bad_step >= 0:
            # checks run before each epoch ends, so the bad step is one of this epoch's
            in_epoch = int(bad_step) - (self.state.global_step - self.state.step)
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch + 1}, step {in_epoch} (global step {int(bad_step)}); "
                f"stopped without saving this state; {self._saved_checkpoints()}"
            )
        return int(signum)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on one batch (an update of `_update`); returns its [loss, correct, count]."""
        return self._update([(x, y)], self.state.global_step)

    def _no_sync(self) -> Any:
        """DDP's no_sync (gradients stay local: a non-final micro-batch of an update), else a null context."""
        ddp = getattr(self.model, "_orig_mod", self.model)  # under torch.compile
        return ddp.no_sync() if isinstance(ddp, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()

    def _pass(self, batches: list[tuple], first_step: int, record: bool) -> torch.Tensor | None:
        """Forward and backward over the update's micro-batches (gradients accumulate, all-reduced with the last
        under DDP); `record`: return the detached sums [loss, correct, count] (the first pass)."""
        n, sums = len(batches), []
        for k, (x, target, y) in enumerate(batches):
            with contextlib.nullcontext() if k == n - 1 else self._no_sync():
                with self.autocast():
                    logits = self.model(x)
                loss = self.mixing.loss(logits.float(), target, self.weight)
                if record and debug.nan_loss_now(self.cfg, first_step + k):
                    loss = loss * float("nan")
                self._note_loss(loss, first_step + k + 1)
                self.scaler.scale(loss if n == 1 else loss / n).backward()
            if record:
                with torch.no_grad():
                    m = y.shape[0]
                    correct = (logits.argmax(1) == y).sum()
                    # a fill kernel: torch.tensor(m, device=...) would copy from pageable host memory, which syncs
                    count = torch.full((), float(m), dtype=torch.float64, device=loss.device)
                    sums.append(torch.stack([loss.detach().double() * m, correct.double(), count]))
        return torch.stack(sums).sum(0) if record else None

    def _update(self, batches: list[tuple[torch.Tensor, torch.Tensor]], first_step: int) -> torch.Tensor:
        """One optimiser update over 1..--accumulate batches (global steps first_step + 1, ...); returns the
        detached sums [loss, correct, count] of its first pass.

        With --sam a second pass at the perturbed weights (train.methods.sam). No host-device sync
        (tests/test_cuda_dry_run.py traces it on fake CUDA tensors), except with --amp fp16: torch's
        GradScaler.step reads its inf check on the host before a foreach optimiser steps (and with --sam the
        first pass's check is read too, to skip an overflowing update before its ascent step).
        """
        self.model.train()
        prepared = []
        for x, y in batches:
            xm, target = self.mixing.prepare(x, y) if self.mixing.active else (x, y)
            if self.cfg.channels_last:
                xm = xm.contiguous(memory_format=torch.channels_last)
            prepared.append((xm, target, y))
        self.optimizer.zero_grad(set_to_none=True)
        sums = self._pass(prepared, first_step, record=True)
        if self.sam is not None:
            self.scaler.unscale_(self.sam)  # pass 1 against SAM's scaler state, pass 2 against the optimiser's
            if self._overflowed(self.sam):
                # fp16 gradients overflowed (the scaler's routine probing): no ascent step (inf * rho / inf is
                # NaN weights), no pass 2 (its NaN loss and the NaN it writes into frozen batch-norm
                # statistics would end the run); the update is skipped and the scale lowered, as GradScaler
                # does for a plain optimiser. Under DDP the inf is all-reduced: every rank skips.
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update(self.net)
                return sums
            self.sam.first_step(zero_grad=True)
            with frozen_bn_stats(self.net):
                self._pass(prepared, first_step, record=False)
            restore_weights(self.sam)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        return sums

    def _overflowed(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the gradients GradScaler just unscaled for `optimizer` hold an inf or NaN (fp16 only; reads
        GradScaler's own per-optimiser record, which its step() reads the same way: one host sync)."""
        if not self.scaler.is_enabled():
            return False
        found = self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
        return sum(v.item() for v in found.values()) > 0

    def _epoch_iterator(self, epoch: int) -> Iterator:
        """The train loader at the saved point of `epoch` (replaying earlier epochs once after a resume)."""
        loader = self.loaders["train"]
        if self._replay:
            self._replay = False
            replay_epochs(loader, epoch)
        it = seek(loader, epoch, self.state.step, self._resume_rng, self.env.device)
        self._resume_rng = None
        return it

    def _signalled(self) -> bool:
        return bool(self.signals and self.signals.signum)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, s, env = self.cfg, self.state, self.env
        skip = s.step
        it = self._epoch_iterator(epoch)
        sums = torch.tensor(s.partial, dtype=torch.float64, device=self.device)
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        bar = EpochBar(len(self.loaders["train"]), skip, desc, env.is_main and cfg.progress)
        start, images = bar.start, 0
        try:
            for group in _groups(it, cfg.accumulate):
                if cfg.debug_seen:
                    for x, _ in group:
                        debug.record_seen(cfg, env.rank, x, epoch)
                before = s.global_step
                sums += self._update(group, before).to(sums.device)
                images += sum(y.shape[0] for _, y in group) * env.world_size
                s.step, s.global_step = s.step + len(group), before + len(group)
                bar.update(sums, images, len(group))
                ce = cfg.check_every
                due = s.step == len(self.loaders["train"]) or before // ce != s.global_step // ce
                # one process sees its signal flag without a sync: it stops after this step, as ranks do at
                # a check (a signal during the step's --debug-wait stops after the next step, as before)
                due = due or (not env.distributed and self._signalled())
                if cfg.debug_wait_at_step is not None and before < cfg.debug_wait_at_step <= s.global_step:
                    debug.wait_for_signal(s.global_step, env.is_main, self._signalled)
                signum = self._check(epoch) if due else 0
                if signum:
                    s.partial = all_reduce_sum(sums.clone(), env).tolist()
                    s.train_seconds += time.perf_counter() - start
                    s.train_images += images
                    raise StopRequested(signum, self.save("last.pt"))
        finally:
            bar.close()
        self._check(epoch)  # whatever the loader's length: the epoch's last steps are checked before any save
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

    def validate(self, split: str = "val", model: nn.Module | None = None) -> EvalResult:
        return evaluate(
            self.model if model is None else model,
            self.loaders[split],
            env=self.env,
            num_classes=self.num_classes,
            autocast=self.autocast,
            channels_last=self.cfg.channels_last,
        )

    def _validate_ema(self, row: dict[str, Any]) -> EvalResult | None:
        """Evaluate the EMA weights (rank 0's batch-norm statistics on every rank) into the metrics row."""
        if self.ema is None:
            return None
        if self.env.distributed:
            for b in self.ema.module.buffers():
                dist.broadcast(b, src=0)
        val = self.validate(model=self.ema.module)
        row.update(val_loss_ema=val.loss, val_acc_ema=val.accuracy)
        if self.loaders["val"] is not self.loaders["test"]:
            row["test_acc_ema"] = self.validate("test", model=self.ema.module).accuracy
        return val

    def _select(self, row: dict[str, Any], val: EvalResult, epoch: int, val_ema: EvalResult | None = None) -> bool:
        """Record the validation result, update the selection (raw or EMA weights, raw on a tie) and the
        schedule; True when it improved."""
        s = self.state
        row.update(val_loss=val.loss, val_acc=val.accuracy, val_seconds=val.seconds)
        which, best = "raw", val
        if val_ema is not None and val_ema.accuracy > val.accuracy:
            which, best = "ema", val_ema
        improved = best.accuracy > s.best_metric
        if improved:
            s.best_metric, s.best_epoch, s.bad_epochs, s.best_weights = best.accuracy, epoch + 1, 0, which
        else:
            s.bad_epochs += 1
        row.update(best_val_acc=s.best_metric, best_epoch=s.best_epoch)
        if self.ema is not None:
            row["best_weights"] = s.best_weights
        step_scheduler(self.scheduler, epoch + 1, s.best_metric)
        return improved

    def _run_epoch(self) -> None:
        """Train and validate the epoch in progress, save best.pt / last.pt and metrics.jsonl."""
        s, epoch = self.state, self.state.epoch
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(self._train_epoch(epoch))
        val = self.validate()
        if self.loaders["val"] is not self.loaders["test"]:  # held-out selection: test every epoch as well,
            row["test_acc"] = self.validate("test").accuracy  # for the published select-on-test figure
        improved = self._select(row, val, epoch, self._validate_ema(row))
        skips = collect_skips(self.cfg, self.env, self.loaders)
        if skips.count:
            row["skipped_bad_files"] = skips.count
            if self.env.is_main:
                log.warning(f"epoch {epoch + 1}: {skips.line()}")
        s.history.append(row)
        s.epoch, s.step = epoch + 1, 0
        if improved:
            self.save("best.pt", weights=s.best_weights)
        self.save("last.pt")
        if self.env.is_main:
            write_metrics(self.out / "metrics.jsonl", s.history)
            if self.events is not None:
                self.events.row(row)
            log.info(
                f"epoch {epoch + 1}/{self.cfg.epochs}: train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.2f}% | val loss {val.loss:.4f} acc {val.accuracy:.2f}% "
                + (f"(EMA {row['val_acc_ema']:.2f}%) " if self.ema is not None else "")
                + f"(best {s.best_metric:.2f}% @ {s.best_epoch}{' ' + s.best_weights if self.ema else ''}) "
                f"| {row['train_images_per_s']:.1f} img/s"
            )

    def fit(self) -> str:
        """Train until the epoch limit or early stop; returns "completed" or "early-stopped".

        Raises StopRequested (after saving last.pt) on SIGINT/SIGTERM and NonFiniteLoss on a NaN/inf loss.
        """
        cfg, s = self.cfg, self.state
        self.signals = SignalFlag()
        self.events = open_event_log(self.out, cfg.tensorboard, self.env.is_main)
        try:
            while s.epoch < cfg.epochs:
                if cfg.early_stop and s.bad_epochs >= cfg.early_stop:
                    log.info(f"early stop: no validation improvement for {cfg.early_stop} epochs")
                    return "early-stopped"
                self._run_epoch()
                flag = torch.tensor([float(self.signals.signum)], device=self.device)
                signum = int(all_reduce_max(flag, self.env))
                if signum:
                    raise StopRequested(signum, self.out / "last.pt")
            return "completed"
        finally:
            self.signals.restore()
            if self.events is not None:
                self.events.close()
