"""Why a frame or rollout is refused: stable reason codes in the order PROTOCOL.md §5 checks them, and which of
them only the signer can have caused (an offence that counts against it)."""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Stable rejection codes, in the order the checks run (PROTOCOL.md, "Receiving")."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"
    BAD_SIGNATURE = "bad_signature"
    KEY_MISMATCH = "key_mismatch"
    LIMIT_EXCEEDED = "limit_exceeded"
    BAD_VALUE = "bad_value"
    WRONG_SWARM = "wrong_swarm"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    # Per-rollout checks, run by the receiver's task suite after the envelope is accepted.
    UNKNOWN_TASK = "unknown_task"
    TASK_ERROR = "task_error"
    REWARD_MISMATCH = "reward_mismatch"
    # Record-level checks of the DHT validator and the collector.
    BAD_EXPIRY = "bad_expiry"
    BANNED = "banned"
    NOT_ALLOWED = "not_allowed"  # a closed swarm: the signer is not on its allowlist


# PROTOCOL.md §5.2: refusals only the signer can have caused (for a frame, only when it is signed by the
# key its subkey names). Anyone can re-store a signed frame under another key, in another swarm, later or
# twice (key_mismatch, wrong_swarm, stale, replay), and an honest peer with another task mix or generator
# sends what we cannot regenerate (unknown_task, task_error).
OFFENCES = frozenset({Reason.MALFORMED, Reason.LIMIT_EXCEEDED, Reason.BAD_VALUE, Reason.FUTURE, Reason.REWARD_MISMATCH})


def is_offence(reason: Reason | str) -> bool:
    return Reason(reason) in OFFENCES


class Rejected(Exception):
    """A frame or rollout refused for `reason`; `detail` is for logs, the reason is for counters. `signer` is the
    peer id whose valid signature the frame carried (the key its subkey named), None when the refusal came
    before the signature was verified: only then can an offence be held against anyone."""

    def __init__(self, reason: Reason, detail: str = "", signer: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.signer = signer

    @property
    def offender(self) -> str | None:
        """Who an offence counts against: the signer, when the reason is one only it can have caused."""
        return self.signer if self.signer is not None and is_offence(self.reason) else None
