"""The processes of a sharded evaluation (``accelerate launch`` or ``torchrun``): rank, world size, and the two
collectives ``evaluate`` needs (rank 0 tells the others the plan; every rank's rows come back to rank 0)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: str | None


def current() -> Dist:
    """This process's rank and world size (accelerate's state when launched with several processes)."""
    initialised = False
    if "torch" in sys.modules:
        import torch.distributed as tdist

        initialised = tdist.is_available() and tdist.is_initialized()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not initialised:
        return Dist(0, 1, None)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return Dist(state.process_index, state.num_processes, device)


def shutdown_distributed() -> None:
    """End the process group a multi-process command started (after every rank got here).

    Call it once at the end of a command, on success. Without it gloo's threads can outlive the interpreter and
    abort the process at exit ("terminate called without an active exception", pytorch/pytorch#190489).
    """
    if "torch" not in sys.modules:
        return
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def broadcast(obj: Any, dist: Dist) -> Any:
    if dist.world == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather(obj: Any, dist: Dist) -> list[Any]:
    if dist.world == 1:
        return [obj]
    from accelerate.utils import gather_object

    return list(gather_object([obj]))
