"""Collapse detection from a node's own samples: the warning sign a volunteer (and the census) should see when a
policy stops answering or forgets what it learnt."""

from __future__ import annotations


class HealthMonitor:
    """Detects collapse from a node's own samples: the moving average of well-formed answers falls below
    half of its best, or the reward's falls below a third of its best. Counts each entry into collapse."""

    def __init__(self, smoothing: float = 0.1, warmup_rounds: int = 10) -> None:
        self.smoothing = smoothing
        self.warmup_rounds = warmup_rounds
        self.rounds = 0
        self.answer_ema: float | None = None
        self.reward_ema: float | None = None
        self.best_answer = 0.0
        self.best_reward = 0.0
        self.collapsed = False
        self.collapses = 0

    def state(self) -> dict[str, float | int | bool | None]:
        return {name: getattr(self, name) for name in _HEALTH_FIELDS}

    def restore(self, state: dict) -> None:
        for name in _HEALTH_FIELDS:
            if name in state:
                setattr(self, name, state[name])

    def observe(self, reward: float, answer_rate: float) -> bool:
        """Feed one round; True when this round enters a collapse."""
        a = self.smoothing
        self.answer_ema = answer_rate if self.answer_ema is None else (1 - a) * self.answer_ema + a * answer_rate
        self.reward_ema = reward if self.reward_ema is None else (1 - a) * self.reward_ema + a * reward
        self.rounds += 1
        if self.rounds < self.warmup_rounds:
            return False
        self.best_answer = max(self.best_answer, self.answer_ema)
        self.best_reward = max(self.best_reward, self.reward_ema)
        broken = self.answer_ema < 0.5 * self.best_answer or (
            self.best_reward >= 0.05 and self.reward_ema < self.best_reward / 3
        )
        entered = broken and not self.collapsed
        self.collapsed = broken
        self.collapses += int(entered)
        return entered


_HEALTH_FIELDS = ("rounds", "answer_ema", "reward_ema", "best_answer", "best_reward", "collapsed", "collapses")
