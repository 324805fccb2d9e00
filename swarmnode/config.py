"""One validated configuration tree: defaults live in the models, YAML files and `--set` only override.

Every error names the file, the dotted key and what would be accepted, so a volunteer can fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmnode.envelope import SwarmRules


class ConfigError(Exception):
    """A config file or override is invalid; the message is one line naming file, key and fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwarmConfig(Section):
    """Parameters every peer of one swarm must share (PROTOCOL.md §4)."""

    id: str = Field("swarmnode-local", pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    window_s: float = Field(30.0, gt=0)
    record_ttl_s: float = Field(60.0, gt=0)
    num_shards: int = Field(16, ge=1, le=4096)
    max_age_windows: int = Field(1, ge=0)
    clock_skew_s: float = Field(5.0, ge=0)

    def rules(self) -> SwarmRules:
        return SwarmRules(
            swarm_id=self.id,
            window_s=self.window_s,
            record_ttl_s=self.record_ttl_s,
            num_shards=self.num_shards,
            clock_skew_s=self.clock_skew_s,
            max_age_windows=self.max_age_windows,
        )


class NetworkConfig(Section):
    """Where the node's libp2p daemon listens and whom it joins. Loopback by default: set host to
    0.0.0.0 (and announce your public address) to accept peers from other machines."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    initial_peers: list[str] = Field(default_factory=list)
    announce_maddrs: list[str] = Field(default_factory=list)
    startup_timeout_s: float = Field(15.0, gt=0)


class GossipConfig(Section):
    enabled: bool = True
    publish_timeout_s: float = Field(5.0, gt=0)
    collect_timeout_s: float = Field(3.0, gt=0)
    shards_per_wave: int = Field(4, ge=1)
    max_rollouts_per_peer: int = Field(4, ge=1)
    ban_after_offences: int = Field(5, ge=1)
    ban_window_s: float = Field(300.0, gt=0)
    ban_duration_s: float = Field(600.0, gt=0)


class NodeConfig(Section):
    data_dir: Path | None = None
    swarm: SwarmConfig = SwarmConfig()
    network: NetworkConfig = NetworkConfig()
    gossip: GossipConfig = GossipConfig()


def load_config(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> NodeConfig:
    """Defaults, then the YAML file, then `key.path=value` overrides (values parsed as YAML scalars)."""
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
            raise ConfigError(f"--set {override!r}: expected key.path=value, e.g. --set sapo.learning_rate=1e-5")
        _assign(data, key.strip().split("."), yaml.safe_load(raw) if raw else "", override)
        source = f"{source} + --set"
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def _assign(data: dict[str, Any], keys: list[str], value: Any, override: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(first["loc"][:-1])
        return f"{source}: unknown key {key!r}; allowed here: {', '.join(allowed)}"
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {first['msg']}{shown}{more}"


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = NodeConfig
    for part in location:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
