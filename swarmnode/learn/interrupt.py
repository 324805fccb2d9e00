"""Why a piece of learning work ends before it is done: a stop was requested, or the allocator refused.

The long loops (decoding, evaluation, training micro-batches) ask a `ShouldStop` between two pieces of work and
raise `Interrupted`, so a stop is honoured within one decode step or one forward/backward pass, not at the end of
a phase that can take minutes. `is_out_of_memory` is the one test of an allocation failure that sampling and
training both back off from, and `release_failed_attempt` what both do before they retry.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch

ShouldStop = Callable[[], bool]


class Interrupted(Exception):
    """A stop was requested mid-round: the round is abandoned, nothing of it half-applied."""


def never() -> bool:
    """The default for work nobody stops from outside (tools, the simulator, tests)."""
    return False


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's (a RuntimeError or MemoryError)."""
    text = str(error)
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text or "out of memory" in text


def release_failed_attempt(device: torch.device) -> None:
    """After an allocation failure, once the failed attempt's frames are gone: its tensors go back to the
    allocator (and CUDA's cache to the device) before the retry."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
