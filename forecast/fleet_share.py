"""A fleet split across data-parallel processes: which devices this process holds, loaders over them alone, and
the few collectives that combine the processes' figures.

With trainer=ddp (any number of nodes and devices) every process builds its own fleet data module
(forecast/fleet_datamodule.py) from `share(trainer, cfg)`: its global rank and the world size,
known before Lightning launches anything, so it keeps, regularises, scales and windows only its
own devices: those numbered rank modulo world_size, devices being numbered in the order they first
appear in the export, which every process computes identically (`forecast.fleet.load_fleet`'s share).
Every process parses the whole export, piece by piece (forecast/fleet_reading.py), and drops the
other devices' readings from each piece as it arrives: it holds the readings of its own devices
only, and the timestamps of all, so that the cut in time, each device's step and status and the
static columns' values are the whole fleet's. A process whose share holds no kept device (a device
too short, or at another step) is refused with a message.

Lightning's DistributedSampler would split each process's windows once more; `OwnShare` is a
DistributedSampler, so Lightning leaves it in place, and it hands out this process's own windows:
for training, as many per epoch as the process with the fewest has (`fewest`), because DDP's
gradient all-reduce needs every process to take the same number of steps.
After training every process tests its own devices and `gather`s the small result to rank zero
(forecast/fleet_evaluate.py), so no process ever holds the whole fleet.

Ranks, in the order Lightning itself resolves them: RANK (torchrun), SLURM_PROCID (srun), else
NODE_RANK x processes per node + LOCAL_RANK (Lightning's own launcher, and the environment-variable
launch of several nodes: MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE). Rank zero's
`lightning.pytorch.utilities.rank_zero_only` is set from it at once, so that only rank zero
creates the MLflow run even before Lightning has launched.

The collectives (`fewest`, `total`, `gather`) run on the process group Lightning's DDP strategy opens
and keeps after fit; without one (a single process) they return this process's own value.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import DistributedSampler

from forecast.errors import InputError


def launch_rank(world_size: int, num_nodes: int) -> int:
    """This process's global rank among `world_size` DDP processes over `num_nodes` nodes, before Lightning launches."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", 0)) == world_size:
        return int(os.environ["SLURM_PROCID"])
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return node * (world_size // max(num_nodes, 1)) + int(os.environ.get("LOCAL_RANK", 0))


def share(trainer, cfg: DictConfig) -> dict:
    """The data module's rank and world_size under DDP for a fleet ({} otherwise); sets rank_zero_only's rank."""
    if trainer.world_size <= 1:
        return {}
    rank = launch_rank(trainer.world_size, trainer.num_nodes)
    rank_zero_only.rank = rank  # what Lightning sets when it launches: only rank zero records, from the start
    if not str(cfg.data.get("_target_", "")).endswith("FleetDataModule"):
        return {}
    if cfg.model.get("series_embedding"):
        raise InputError(
            "model.series_embedding=true needs every device's number on every process, but under trainer=ddp each process holds "
            "only its share of the fleet.\nTrain the embedding on one process, or leave model.series_embedding=false."
        )
    return {"rank": rank, "world_size": trainer.world_size}


def running() -> bool:
    """Whether a process group runs (Lightning's DDP strategy opens it when fit launches the processes)."""
    return dist.is_available() and dist.is_initialized()


def fewest(count: int) -> int:
    """The smallest `count` over all processes (this one's when no process group runs)."""
    return _reduce(count, dist.ReduceOp.MIN) if running() else count


def total(count: int) -> int:
    """The sum of `count` over all processes (this one's when no process group runs)."""
    return _reduce(count, dist.ReduceOp.SUM) if running() else count


def _reduce(count: int, op) -> int:
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(value, op=op)
    return int(value.item())


def gather(value) -> list | None:
    """Every process's `value` (picklable; keep it small) on rank zero, in rank order; None on the other ranks; [value] alone."""
    if not running():
        return [value]
    values = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, values, dst=0)
    return values


class OwnShare(DistributedSampler):
    """This process's own windows: the first `count` of a fresh permutation every epoch (shuffle), else all in order."""

    def __init__(self, dataset, count: int, shuffle: bool, seed: int = 0):
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
        self.count = count

    def __iter__(self):
        if not self.shuffle:
            yield from range(self.count)
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for chunk in torch.randperm(len(self.dataset), generator=generator)[: self.count].split(1 << 16):
            yield from chunk.tolist()

    def __len__(self) -> int:
        return self.count
