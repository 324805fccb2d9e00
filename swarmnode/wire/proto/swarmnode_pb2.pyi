from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reachability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REACHABILITY_UNKNOWN: _ClassVar[Reachability]
    REACHABILITY_PUBLIC: _ClassVar[Reachability]
    REACHABILITY_PRIVATE: _ClassVar[Reachability]
REACHABILITY_UNKNOWN: Reachability
REACHABILITY_PUBLIC: Reachability
REACHABILITY_PRIVATE: Reachability

class Envelope(_message.Message):
    __slots__ = ("version", "signer", "payload", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    signer: bytes
    payload: bytes
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., signer: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("family", "config_hash", "seed", "index")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    family: str
    config_hash: str
    seed: int
    index: int
    def __init__(self, family: _Optional[str] = ..., config_hash: _Optional[str] = ..., seed: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("text", "reward", "token_logprobs")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    text: str
    reward: float
    token_logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, text: _Optional[str] = ..., reward: _Optional[float] = ..., token_logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("task", "completions")
    TASK_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    task: TaskRef
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    def __init__(self, task: _Optional[_Union[TaskRef, _Mapping]] = ..., completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ...) -> None: ...

class RolloutBatch(_message.Message):
    __slots__ = ("swarm_id", "window", "sequence", "timestamp", "model_id", "suite_version", "rollouts")
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SUITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    swarm_id: str
    window: int
    sequence: int
    timestamp: float
    model_id: str
    suite_version: str
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, swarm_id: _Optional[str] = ..., window: _Optional[int] = ..., sequence: _Optional[int] = ..., timestamp: _Optional[float] = ..., model_id: _Optional[str] = ..., suite_version: _Optional[str] = ..., rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("swarm_id", "window", "timestamp", "reachability", "addresses")
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REACHABILITY_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    swarm_id: str
    window: int
    timestamp: float
    reachability: Reachability
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, swarm_id: _Optional[str] = ..., window: _Optional[int] = ..., timestamp: _Optional[float] = ..., reachability: _Optional[_Union[Reachability, str]] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Beacon(_message.Message):
    __slots__ = ("swarm_id", "window", "timestamp", "software", "model_id", "round", "reward", "held_out", "held_out_round", "rollouts_shared", "rollouts_received", "peer_groups_trained", "reachability", "uptime_s", "rounds_per_hour", "rollouts_per_hour", "phase")
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_SHARED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PEER_GROUPS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    REACHABILITY_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    swarm_id: str
    window: int
    timestamp: float
    software: str
    model_id: str
    round: int
    reward: float
    held_out: float
    held_out_round: int
    rollouts_shared: int
    rollouts_received: int
    peer_groups_trained: int
    reachability: Reachability
    uptime_s: float
    rounds_per_hour: float
    rollouts_per_hour: float
    phase: str
    def __init__(self, swarm_id: _Optional[str] = ..., window: _Optional[int] = ..., timestamp: _Optional[float] = ..., software: _Optional[str] = ..., model_id: _Optional[str] = ..., round: _Optional[int] = ..., reward: _Optional[float] = ..., held_out: _Optional[float] = ..., held_out_round: _Optional[int] = ..., rollouts_shared: _Optional[int] = ..., rollouts_received: _Optional[int] = ..., peer_groups_trained: _Optional[int] = ..., reachability: _Optional[_Union[Reachability, str]] = ..., uptime_s: _Optional[float] = ..., rounds_per_hour: _Optional[float] = ..., rollouts_per_hour: _Optional[float] = ..., phase: _Optional[str] = ...) -> None: ...

class DialBackRequest(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ports: _Optional[_Iterable[int]] = ...) -> None: ...

class DialBackResponse(_message.Message):
    __slots__ = ("observed_host", "reached_ports")
    OBSERVED_HOST_FIELD_NUMBER: _ClassVar[int]
    REACHED_PORTS_FIELD_NUMBER: _ClassVar[int]
    observed_host: str
    reached_ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, observed_host: _Optional[str] = ..., reached_ports: _Optional[_Iterable[int]] = ...) -> None: ...
