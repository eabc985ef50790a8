"""Learning-rate schedules (multipliers for ``torch.optim.lr_scheduler.LambdaLR``)."""

from __future__ import annotations

from collections.abc import Callable


def linear_warmup_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return f
