"""Distributed-training helpers (torchrun / DDP): rank and world size, joining and leaving the
process group, gathering embeddings across processes and averaging gradients. With one process
every helper is a no-op, so single-process runs need no process group.

A command that joins the group must leave it while the interpreter is still whole: use
``with distributed_session():``. Without ``destroy_process_group`` gloo's worker threads outlive
the interpreter and a rank could abort at exit ("terminate called without an active
exception", SIGABRT) after all its work was done, failing the whole torchrun job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed_from_env() -> bool:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return torch.distributed.is_available() and torch.distributed.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    return True


def leave_distributed(*, wait_for_peers: bool = True) -> None:
    """Leave the process group (no-op without one). With ``wait_for_peers`` every rank first
    waits at a barrier, so no rank tears down its side while a peer still talks to it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if wait_for_peers:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@contextmanager
def distributed_session() -> Iterator[tuple[int, int]]:
    """Join the process group when started by torchrun, yield (rank, world size), and leave the
    group on the way out (after a barrier when the body finished; at once when it raised, since
    the peers may never reach the barrier)."""
    init_distributed_from_env()
    try:
        yield dist_info()
    except BaseException:
        leave_distributed(wait_for_peers=False)
        raise
    leave_distributed()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0 (with gradients), rank order."""
    rank, world = dist_info()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def average_gradients(params) -> None:
    """All-reduce and average the gradients of ``params`` over the processes.

    A parameter may have a gradient on some processes only (e.g. the weak grounding term when
    a process's share of the batch holds no supervised image and the local term is off): which
    ones have one is agreed first, so every process reduces the same tensors (no hang), and a
    missing gradient counts as zero; one unused everywhere stays without a gradient."""
    _, world = dist_info()
    if world == 1:
        return
    params = list(params)
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    torch.distributed.all_reduce(has)
    for p, n in zip(params, has.tolist()):
        if n == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world
