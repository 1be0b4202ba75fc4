"""``--on-nan``: what the trainer does when a loss (or a gradient) becomes NaN or infinite.

- ``rollback`` (default): back to the last checkpoint (or the run's start), with the learning
  rate halved over the stretch that failed; the next failure before that stretch is passed halves
  it again. After ``limit`` (3) rollbacks in a row, the run stops with a message.
- ``stop``: stop at once; the last checkpoint stays as it was (nothing non-finite is saved).
- ``warn``: the health monitor warns, and training goes on (the reference's behaviour).

The guard's state (how many rollbacks in a row, the factor, the step it holds until) is part of the
checkpoint, so a resumed run keeps the lowered rate exactly as an uninterrupted one would.
"""
from __future__ import annotations

from typing import Any


class NanGuard:
    def __init__(self, policy: str = "rollback", limit: int = 3) -> None:
        self.policy, self.limit = policy, limit
        self.rollbacks = 0  # in a row, since the last stretch that was passed without a failure
        self.until = 0  # the step the learning rate stays lowered until
        self.factor = 1.0

    def lr_factor(self, step: int) -> float:
        """The learning rate's multiplier at ``step``."""
        return self.factor if step < self.until else 1.0

    def passed(self, step: int) -> None:
        """Training reached ``step`` without a failure: a stretch passed ends the streak."""
        if self.rollbacks and step >= self.until:
            self.rollbacks, self.factor = 0, 1.0

    @property
    def exhausted(self) -> bool:
        return self.rollbacks >= self.limit

    def rollback(self, failed_at: int) -> float:
        """Record a rollback of the stretch ending at ``failed_at``; returns the new rate factor."""
        self.rollbacks += 1
        self.until = max(self.until, failed_at)
        self.factor = 0.5 ** self.rollbacks
        return self.factor

    def state(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "until": self.until, "factor": self.factor}

    def load(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.rollbacks = int(state.get("rollbacks", 0))
        self.until = int(state.get("until", 0))
        self.factor = float(state.get("factor", 1.0))
