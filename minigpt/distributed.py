"""Data parallelism under `torchrun`: one process per device, torch.distributed between them.

minigpt never starts processes itself. `torchrun` (or `python -m torch.distributed.run`) starts
one copy of a command per device and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
address; `init_from_env` then joins them (gloo on the CPU, nccl on CUDA). Everything else here
works the same with or without a process group: one process is a world of size 1.

    torchrun --standalone --nproc-per-node 2 -m minigpt tune --text-file corpus.txt --model gpt2 --out lens/
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import MinigptError

DEFAULT_TIMEOUT_S = 60.0


def active() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index, 0 .. world_size() - 1 (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes share the work (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this is rank 0: the one process that writes files and prints results."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun set up, if it did and none exists yet; return whether one is active.

    The backend follows the device: nccl for CUDA, gloo for the CPU. `timeout_s` bounds how long a
    collective waits for a missing process, so a crashed rank ends the others instead of hanging them.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return active()
    if not dist.is_available():
        raise MinigptError("this torch build has no torch.distributed; run the command without torchrun")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))  # nccl binds each process to its own GPU
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise MinigptError(
            f"cannot join the torchrun process group ({e}); on one machine try torchrun --standalone, "
            "and on CPU set GLOO_SOCKET_IFNAME=lo if the network interface is the problem"
        ) from e
    return active()


def local_device(spec: str | None) -> str | None:
    """'cuda' under torchrun means this process's own GPU, cuda:LOCAL_RANK; other specs are kept as given."""
    if spec == "cuda" and launched_by_torchrun():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return spec


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous share of n items: the same split on every run, no item twice, none padded.

    Shares differ in size by at most one item; a rank may get none when n < world.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return slice(n * r // w, n * (r + 1) // w)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` over all ranks, in place (nothing to do in a single process); return it."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` over all ranks with one collective (one flat buffer, not one call per tensor)."""
    if not active():
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    if active():
        dist.barrier()
