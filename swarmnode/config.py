"""One validated configuration tree: defaults live in the models, YAML files and `--set` only override.

Every error names the file, the dotted key and what would be accepted, so a volunteer can fix it. A leaf of
the package: it imports nothing else of swarmnode and builds no domain objects; each component takes its own
section (`SwarmRules.of(config.swarm)`, `TaskSuite.of(config.tasks)`, `SapoTrainer(..., config.sapo, ...)`).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Bounds the wire protocol sets (PROTOCOL.md); tests/test_config.py holds them equal to the wire's own constants.
MAX_ROLLOUTS_PER_BATCH = 64  # a round's groups travel in one batch
HELD_OUT_SPAN = 2**16  # reserved held-out items per family (PROTOCOL.md §2.5)
MAX_TRAINING_SEED = 2**32  # own training datasets stay below the held-out stream positions
DEFAULT_DATASET_SIZE = 100_000


class ConfigError(Exception):
    """A config file or override is invalid; the message is one line naming file, key and fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwarmConfig(Section):
    """Parameters every peer of one swarm must share (PROTOCOL.md §4)."""

    id: str = Field("swarmnode-local", pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    window_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    record_ttl_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    num_shards: int = Field(
        65_536, ge=1, le=2**20,
        description="a key holds ~N/num_shards batches a window and a read returns them all: keep it at or above the "
        "swarm's size, so that reading a signer's shard costs about its batch",
    )
    max_age_windows: int = Field(1, ge=0)
    epoch_windows: int = Field(
        4, ge=1, le=64,
        description="directory entries and beacons are stored and read once an epoch of this many windows, under keys "
        "named by the epoch: fewer stores, lookups and reads a round, for a census and a directory up to two epochs old",
    )
    clock_skew_s: float = Field(5.0, ge=0, allow_inf_nan=False)
    allowlist: Path | None = Field(
        None, description="a closed swarm: the operator-signed list of the peers that may store and serve"
    )
    operator: str | None = Field(None, description="the peer id whose signature the allowlist must carry")

    @model_validator(mode="after")
    def _records_outlive_their_windows(self) -> SwarmConfig:
        """Collectors read a batch until `max_age_windows` windows after its own, and a refresh re-stores it only
        then: a shorter TTL leaves a gap in which the batch is neither stored nor refreshed."""
        if (self.allowlist is None) != (self.operator is None):
            raise ValueError("swarm.allowlist and swarm.operator go together: a closed swarm names both, an open one neither")
        needed = (self.max_age_windows + 1) * self.window_s
        if self.record_ttl_s < needed:
            raise ValueError(
                f"swarm.record_ttl_s ({self.record_ttl_s:g}) must be at least (swarm.max_age_windows + 1) x "
                f"swarm.window_s = {needed:g}: a batch would expire while collectors still read its window"
            )
        return self


class NetworkConfig(Section):
    """Where the node's libp2p daemon listens and whom it joins. Loopback by default: to accept peers
    from other machines, listen on an address they can reach (or the any-address 0.0.0.0). Behind a NAT
    router, forward `port` to this machine (and announce the router's public address) to be reachable;
    otherwise the node joins as a DHT client, which works as well for training (docs/DESIGN.md §6)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="fixed port (e.g. one your router forwards); 0 = any free port")
    initial_peers: list[str] = Field(default_factory=list, description="several are better: any one that answers will do")
    fallback_peers: list[str] = Field(
        default_factory=list,
        description="also tried, but none answering is no error; `join` adds the public peers it learnt (known_peers.json)",
    )
    announce_maddrs: list[str] = Field(
        default_factory=list, description="addresses peers can dial you at, e.g. your router's public address and forwarded port"
    )
    startup_timeout_s: float = Field(15.0, gt=0)
    reachability: Literal["auto", "public", "private"] = Field(
        "auto",
        description="auto: ask initial peers to dial us back; private: join as a DHT client (behind NAT); public: serve",
    )
    reachability_recheck_s: float = Field(600.0, gt=0, description="how often auto re-asks peers to dial us back")
    nat_port_map: bool = Field(
        True, description="ask the router for a port mapping (UPnP/NAT-PMP) when listening beyond loopback"
    )
    relay: bool = Field(False, description="libp2p circuit relays (measured unnecessary: docs/DESIGN.md §6)")
    max_kbps: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="cap on DHT traffic in kilobits per second, sent and received together (a metered link bills "
        "both); over it, own requests wait and peers' are refused; null = unlimited (docs/DESIGN.md §6.4)",
    )


class GossipConfig(Section):
    enabled: bool = True
    publish_timeout_s: float = Field(5.0, gt=0)
    collect_timeout_s: float = Field(3.0, gt=0)
    shards_per_wave: int = Field(4, ge=1)
    beacon: bool = Field(
        True, description="store a signed status beacon once a window (`swarmnode swarm` lists the node) and keep a census"
    )
    max_rollouts_per_peer: int = Field(4, ge=1)
    refresh_for_s: float = Field(
        1800.0, ge=0, description="re-store our latest batch each window until a newer one replaces it, for up to "
        "this long: rounds longer than swarm.record_ttl_s still share; 0 disables"
    )
    ban_after_offences: int = Field(5, ge=1)
    ban_window_s: float = Field(300.0, gt=0)
    ban_duration_s: float = Field(600.0, gt=0)


class IntakeConfig(Section):
    """What this node does with peers' rollouts after gossip delivered them: how many it asks for, how long it
    spends judging them, which it trains on (docs/DESIGN.md §2)."""

    collect_oversample: int = Field(
        3, ge=1, description="ask gossip for this many times J rollouts: about half of any groups carry no advantage"
    )
    rescore_budget_s: float = Field(
        10.0, gt=0, description="stop judging peers' rollouts after this long in a round (some reasoning-gym scorers take seconds)"
    )
    external_families: Literal["sampled", "suite"] = Field(
        "sampled",
        description="train on peers' groups only of families we sample (weight > 0), or of any family we can verify",
    )


class RewardMode(str, Enum):
    """How a verifier score becomes a training reward.

    partial: reasoning-gym's score as is (includes partial credit).
    exact: 1 if the score is 1, else 0; immune to partial-credit gaming, sparser.
    guarded: partial credit, except 0 when the answer is much longer than the oracle (the
      `len(oracle)/len(answer)` substring credit that "0123456789" games).
    """

    PARTIAL = "partial"
    EXACT = "exact"
    GUARDED = "guarded"


class FamilyConfig(Section):
    name: str
    weight: float = Field(1.0, ge=0, description="0 = never sampled here; peers' rollouts are verified, used with intake.external_families=suite")
    config: dict[str, Any] = Field(default_factory=dict)
    dataset_size: int = Field(DEFAULT_DATASET_SIZE, ge=1)

    @model_validator(mode="after")
    def _hashable(self) -> FamilyConfig:
        """The config hash (PROTOCOL.md §2.4) is JSON of the config: it must be JSON without NaN or infinity."""
        try:
            json.dumps(self.config, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"config must be plain JSON values without NaN or infinity ({error})") from None
        return self


# What the embedded seed model can learn on a CPU: short integer answers, five phrasings.
DEFAULT_FAMILIES = (
    FamilyConfig(name="chain_sum", config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    FamilyConfig(name="products", config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    FamilyConfig(name="count_bits", config={"min_n": 1, "max_n": 63}),
    FamilyConfig(name="gcd", config={"min_value": 1, "max_value": 30}),
    FamilyConfig(
        name="leg_counting",
        config={"min_animals": 1, "max_animals": 2, "min_instances": 1, "max_instances": 3},
    ),
)


class TasksConfig(Section):
    families: list[FamilyConfig] = Field(default_factory=lambda: list(DEFAULT_FAMILIES), min_length=1)
    reward: RewardMode = RewardMode.GUARDED
    seed: int | None = Field(
        None, ge=0, lt=MAX_TRAINING_SEED, description="dataset seed; default: derived from the node's peer id"
    )

    @model_validator(mode="after")
    def _something_to_sample(self) -> TasksConfig:
        if not any(family.weight > 0 for family in self.families):
            raise ValueError("at least one family needs weight > 0 (weight 0 = verify only)")
        return self


class LoraConfig(Section):
    """Low-rank adapters (peft) instead of training every weight; peft's names, so its documentation applies."""

    r: int = Field(8, ge=1, description="adapter rank")
    lora_alpha: int = Field(8, ge=1, description="adapters are scaled by lora_alpha / r")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        None, description="module names to adapt, e.g. [q_proj, v_proj]; null: peft's default for the architecture"
    )
    init_lora_weights: bool | Literal["gaussian", "pissa", "olora"] = Field(
        True, description="true (zero-initialised B: KL to the start is the base with adapters off, no copy)"
    )


class ModelConfig(Section):
    name: str = Field("swarmnode-seed", description="'swarmnode-seed' (embedded), a hub id, or a local directory")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$", description="auto: a CUDA GPU, else MPS, else the CPU"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="compute dtype of forward passes and of frozen (LoRA base) weights; trained weights and optimizer stay float32 (docs/DESIGN.md §9)"
    )
    threads: int | Literal["auto"] = Field(
        "auto", description="compute threads; auto: the CPUs this process may use (affinity mask, cgroup CPU quota)"
    )
    lora: LoraConfig | None = Field(None, description="train low-rank adapters instead of every weight (needs peft)")
    max_new_tokens: int = Field(24, ge=1)
    max_prompt_tokens: int = Field(192, ge=8)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        """One message for every wrong value (not one per member of the union); null is auto, as a data dir
        written before `auto` existed says."""
        if value is None or value == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("expected a number of threads (1 or more) or auto")


class SapoConfig(Section):
    """SAPO per round: Q questions, G completions each; train on I own + J external groups.

    `sampling` says what sharing buys (docs/DESIGN.md §4): `equal` asks Q questions whatever J is, so
    peers' groups only replace or add to own ones at equal sampling; `transplant` (the SAPO authors'
    protocol when Q = I + J, the default 8 = 4 + 4) asks only I questions while peers supply groups and
    adopts J of theirs, so sharing saves sampling. Alone a transplant node asks all Q itself.
    """

    sampling: Literal["equal", "transplant"] = Field(
        "equal", description="equal: ask Q every round; transplant: ask I questions while peers supply groups, Q alone"
    )
    questions_per_round: int = Field(
        8, ge=1, le=MAX_ROLLOUTS_PER_BATCH, description="a round's groups travel in one batch, of at most 64 rollouts (PROTOCOL.md, limits)"
    )
    completions_per_question: int = Field(8, ge=2)
    local_groups: int = Field(4, ge=0, description="I")
    external_groups: int = Field(4, ge=0, description="J")
    selection: Literal["uniform", "learnability"] = "uniform"
    clip_low: float = Field(0.2, ge=0, lt=1, description="the ratio may fall to 1 - clip_low before the clip acts")
    clip_high: float = Field(0.28, ge=0)
    kl_beta: float = Field(0.0, ge=0)
    kl_to_start: bool | None = Field(
        None, description="report KL to the start-of-run policy (keeps a frozen copy); null: for models up to 100M parameters"
    )
    updates_per_round: int = Field(
        1, ge=1, description="optimizer steps per round, each on a slice of its samples; from the 2nd the clip acts"
    )
    token_budget: int | None = Field(
        None, ge=1, description="normalise the loss by this many tokens; default: (I+J) x G x max_new_tokens"
    )
    min_own_groups: int = Field(1, ge=0, description="skip the step when fewer own informative groups exist")
    own_first: bool = Field(
        True, description="own informative groups take the I+J slots first; peers' groups fill what is left (<= J)"
    )
    external_weight: float = Field(1.0, ge=0, le=1)
    importance_clip: float | None = Field(
        2.0, gt=0, description="truncate sender-log-prob importance weights at this value; null disables"
    )

    @model_validator(mode="after")
    def _some_groups(self) -> SapoConfig:
        if self.local_groups + self.external_groups == 0:
            raise ValueError("sapo.local_groups + sapo.external_groups must be at least 1")
        if self.sampling == "transplant" and self.local_groups == 0:
            raise ValueError(
                "sapo.sampling: transplant needs sapo.local_groups >= 1 (the questions a node asks itself), "
                "or use sapo.sampling: equal"
            )
        return self

    def questions_to_ask(self, peers_supplied: bool) -> int:
        """How many questions a round samples: transplant asks I (at most Q) only while peers supply groups."""
        if self.sampling == "transplant" and peers_supplied:
            return min(self.local_groups, self.questions_per_round)
        return self.questions_per_round


class OptimizerConfig(Section):
    """AdamW on the trained weights (float32 masters, docs/DESIGN.md §9)."""

    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = Field(1.0, gt=0)


class MemoryConfig(Section):
    """How a training step is cut to fit (docs/DESIGN.md §9)."""

    micro_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="rows per forward/backward pass; auto: the largest up to 32 that the memory estimate fits"
    )
    budget_gib: float | None = Field(
        None, gt=0, description="what `auto` may plan a step into; null: what the node holds + 80% of free memory"
    )


class CheckpointConfig(Section):
    """Save when both `every_rounds` rounds and `min_interval_s` seconds have passed since the last save
    (and always on exit): on a fast node a fixed round interval would spend a few % of its time saving."""

    every_rounds: int = Field(10, ge=1)
    min_interval_s: float = Field(60.0, ge=0, description="a SIGKILL loses at most this much work (or every_rounds rounds)")
    keep_last: int = Field(3, ge=1)
    # a full 0.5B checkpoint is 5.9 GB: two (the newest and a fallback) fit, three do not; LoRA's (26 MB) all do
    max_disk_gb: float = Field(
        15.0, gt=0, description="after each save the oldest go first; the newest is kept even if it alone is larger"
    )


class EvalConfig(Section):
    """Held-out evaluation (docs/DESIGN.md §7): the same reserved questions per family at round 0 (the base
    model) and every `every_rounds` rounds, greedy and sampled. Its cost is one phase of the rounds it runs in."""

    every_rounds: int = Field(50, ge=0, description="0 disables evaluation in the node")
    questions_per_family: int = Field(32, ge=1, le=HELD_OUT_SPAN)
    samples_per_question: int = Field(2, ge=1, description="samples at the training temperature, besides the greedy one")


class MetricsConfig(Section):
    """Prometheus /metrics and the dashboard's /status; loopback unless you choose otherwise."""

    host: str = "127.0.0.1"
    port: int | None = Field(9480, ge=0, le=65535, description="null disables the HTTP endpoint")


class NodeConfig(Section):
    data_dir: Path | None = None
    seed: int | None = Field(None, ge=0, description="seed for sampling and selection; default: from the peer id")
    nice: int = Field(
        10, ge=0, le=19, description="`join` lowers its CPU priority to this niceness (never raises it): the machine's other work goes first"
    )
    swarm: SwarmConfig = SwarmConfig()
    network: NetworkConfig = NetworkConfig()
    gossip: GossipConfig = GossipConfig()
    intake: IntakeConfig = IntakeConfig()
    tasks: TasksConfig = TasksConfig()
    model: ModelConfig = ModelConfig()
    sapo: SapoConfig = SapoConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    memory: MemoryConfig = MemoryConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    metrics: MetricsConfig = MetricsConfig()


# Keys that moved to another section; a file or --set that uses the old place still loads, with a notice.
MOVED_KEYS = {
    "gossip.rescore_budget_s": "intake.rescore_budget_s",
    "sapo.collect_oversample": "intake.collect_oversample",
    "sapo.external_families": "intake.external_families",
    "sapo.learning_rate": "optimizer.learning_rate",
    "sapo.weight_decay": "optimizer.weight_decay",
    "sapo.adam_betas": "optimizer.adam_betas",
    "sapo.grad_clip": "optimizer.grad_clip",
    "sapo.micro_batch_size": "memory.micro_batch_size",
    "sapo.memory_budget_gib": "memory.budget_gib",
}


def load_config(
    path: Path | None = None, overrides: list[str] | tuple[str, ...] = (), notices: list[str] | None = None
) -> NodeConfig:
    """Defaults, then the YAML file, then `key.path=value` overrides (values parsed as YAML scalars). Keys at
    their old place (MOVED_KEYS) are moved, and a line saying so is appended to `notices`."""
    source = str(path) if path else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror})")
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (swarm:, network:, ...)")
        data = loaded or {}
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. --set optimizer.learning_rate=1e-5")
        _assign(data, key.strip().split("."), yaml.safe_load(raw) if raw else "", override)
        source = f"{source} + --set"
    for old, new in MOVED_KEYS.items():
        if _move(data, old, new) and notices is not None:
            notices.append(f"{source}: {old} is now {new} (read from its old place; rename it there)")
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


CONFIG_FILENAME = "config.yaml"  # in a data dir: the config the node last ran with (written at every start)


def config_yaml(config: NodeConfig) -> str:
    """The resolved config as YAML that `load_config` reads back: a data dir keeps the one it ran with
    (`swarmnode export` and `eval` rebuild its model from it)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _assign(data: dict[str, Any], keys: list[str], value: Any, override: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _move(data: dict[str, Any], old: str, new: str) -> bool:
    """Move the value at dotted `old` to `new` (unless `new` is set too); whether anything moved."""
    old_section, old_key = old.split(".")
    section = data.get(old_section)
    if not isinstance(section, dict) or old_key not in section:
        return False
    value = section.pop(old_key)
    new_section, new_key = new.split(".")
    target = data.setdefault(new_section, {})
    if isinstance(target, dict):
        target.setdefault(new_key, value)
    return True


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(first["loc"][:-1])
        return f"{source}: unknown key {key!r}; allowed here: {', '.join(allowed)}"
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    fix = f"; write a list: {key}=[{given}] (YAML: [a, b])" if first["type"] == "list_type" and isinstance(given, str) else ""
    return f"{source}: {key}: {first['msg']}{shown}{more}{fix}"


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = NodeConfig
    for part in location:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        sections = [kind for kind in (annotation, *get_args(annotation)) if isinstance(kind, type) and issubclass(kind, BaseModel)]
        if not sections:  # a section that may be null (model.lora) is a union with None
            return []
        model = sections[0]
    return sorted(model.model_fields)
