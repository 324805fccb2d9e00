"""Which groups a step trains on (docs/DESIGN.md §2): informative ones only, at most J of peers', own groups first
by default, and none at all without enough signal of our own."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarmnode.config import SapoConfig
from swarmnode.learn.group import Group


@dataclass
class Selection:
    own: list[Group]
    external: list[Group]
    skipped_reason: str | None = None  # set when the step must not run

    @property
    def groups(self) -> list[Group]:
        return self.own + self.external


def select_groups(
    own: Sequence[Group],
    external: Sequence[Group],
    config: SapoConfig,
    rng: random.Random,
) -> Selection:
    """Drop zero-advantage groups, then fill I+J slots with at most J external groups and own groups.

    External groups never exceed J (a missing external group is replaced by an own one, never the
    reverse), and the step is skipped when fewer than `min_own_groups` own groups are informative:
    training only on peers' text, with no anchor in our own samples, is what collapsed nodes. With
    `own_first`, own groups take the slots first and peers' groups only fill what is left: a node never
    trains on less of its own signal than it would alone (simulated: displacing own groups cost up to 7%).
    """
    own_informative = [g for g in own if g.informative]
    external_informative = [g for g in external if g.informative]
    if len(own_informative) < config.min_own_groups:
        return Selection([], [], f"{len(own_informative)} informative own groups < min_own_groups")
    slots = config.local_groups + config.external_groups
    if config.own_first:
        picked_own = _pick(own_informative, slots, config.selection, rng)
        external_slots = min(config.external_groups, slots - len(picked_own))
        picked_external = _pick(external_informative, external_slots, config.selection, rng)
    else:
        picked_external = _pick(external_informative, config.external_groups, config.selection, rng)
        picked_own = _pick(own_informative, slots - len(picked_external), config.selection, rng)
    if not picked_own and not picked_external:
        return Selection([], [], "no informative groups")
    return Selection(picked_own, picked_external)


def _pick(groups: list[Group], count: int, strategy: str, rng: random.Random) -> list[Group]:
    """uniform: as in the paper. learnability: weighted by reward variance without replacement
    (Efraimidis-Spirakis keys), i.e. prefer questions the policy solves about half of the time,
    where a GRPO update carries the most information."""
    count = min(count, len(groups))
    if strategy == "uniform":
        return rng.sample(groups, count)
    keyed = sorted(groups, key=lambda g: rng.random() ** (1.0 / max(g.reward_std**2, 1e-12)), reverse=True)
    return keyed[:count]


