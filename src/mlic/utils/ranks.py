"""Which process this is in a multi-process job (DDP through torchrun, SLURM or Lightning's launcher):
the one that prints, its rank, and a number no other process of the job has."""

from __future__ import annotations

import os

from lightning.fabric.utilities.rank_zero import rank_zero_only


def is_rank_zero() -> bool:
    """True in the first process of a multi-process run (and in a single-process one): the one that
    prints. Lightning reads the rank from the launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID)."""
    return global_rank() == 0


def global_rank() -> int:
    """This process's rank in a multi-process job (0 in a single-process one), as Lightning knows it."""
    return int(rank_zero_only.rank or 0)


def process_index() -> int:
    """A number of this process that no other process of the job has, 0 in the first (and only) one: the
    global rank where the launcher gives it (torchrun's RANK, SLURM's SLURM_PROCID), else one made of the
    node and local ranks Lightning's own launcher sets. Read from the environment, so it is known before
    training starts (and in loader workers)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    node, local = (int(os.environ.get(n, "0") or 0) for n in ("NODE_RANK", "LOCAL_RANK"))
    return node * 100_000 + local
