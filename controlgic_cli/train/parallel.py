"""Data-parallel training across processes (torchrun / DDP), and the single-process case.

Launched by torchrun, every process trains a replica on its own crops and
DDP averages the gradients. Everything the trainer changes outside the
optimiser must stay identical on every replica, so it goes through here:
code-usage counts are summed over ranks (so every rank restarts the same dead
codes), restarted codes are broadcast from rank 0, and stop/checkpoint
decisions are agreed on before anyone acts. Without torchrun's environment
every call is a no-op and the trainer runs as one plain process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Replicas:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over replicas."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: every replica gets rank 0's values."""
        if self.distributed:
            dist.broadcast(tensor, src=0)
        return tensor

    def any(self, *flags: bool) -> list[bool]:
        """Per flag: whether it is set on any replica (so all act on the same step)."""
        if not self.distributed:
            return list(flags)
        votes = torch.tensor([int(f) for f in flags], dtype=torch.int64)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return [bool(v) for v in votes.tolist()]

    def gather(self, value: object) -> list[object]:
        """Every replica's value, in rank order (pickled: small values only)."""
        if not self.distributed:
            return [value]
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def assert_in_sync(self, module: torch.nn.Module) -> None:
        """Fail loudly if replicas have drifted apart (a bug in what is shared, not bad luck)."""
        if not self.distributed:
            return
        checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()
        reference = checksum.clone()
        dist.broadcast(reference, src=0)
        if not torch.equal(checksum, reference):
            raise RuntimeError(f"rank {self.rank}: parameters differ from rank 0's; the replicas are out of sync")


def setup(device: str) -> tuple[Replicas, torch.device]:
    """Join torchrun's process group when launched by it; returns the replica and its device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Replicas(), torch.device(device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        # NCCL for GPUs; gloo runs the same code on CPUs (and in the tests).
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Replicas(rank, world_size, local_rank), torch_device


def teardown(replicas: Replicas, wait_for_others: bool = True) -> None:
    """Leave the process group. After a failure there is no barrier: the others may be gone."""
    if replicas.distributed and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()
