"""Model preparation for training: channels_last, SyncBatchNorm, DistributedDataParallel, torch.compile."""

from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .distributed import DistEnv


def prepare_model(net: nn.Module, cfg: Config, env: DistEnv) -> tuple[nn.Module, nn.Module]:
    """(net, model): `net` holds the weights that checkpoints save (SyncBN-converted when asked), `model`
    is what the loop calls (net, wrapped in DDP under torchrun, compiled with --compile)."""
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    model: nn.Module = net
    if env.distributed:
        if cfg.sync_bn:
            model = net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        model = torch.compile(model)
    return net, model
