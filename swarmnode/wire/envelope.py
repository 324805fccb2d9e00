"""The signed envelope: signer, payload bytes and a signature over a domain tag, the version and the payload.

Everything meaningful is inside the payload; the envelope only says who signed which bytes for which kind of
record (the domain tag), so checks 1-5 of PROTOCOL.md §5 are the same for every kind. Also the text rules that
several kinds share (canonical protobuf, byte limits, the swarm id's pattern).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from swarmnode.wire.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, peer_id_base58, verify_signature
from swarmnode.wire.proto import swarmnode_pb2 as pb
from swarmnode.wire.rejection import Reason, Rejected

ENVELOPE_VERSION = 1

MAX_SWARM_ID_BYTES = 64
MAX_MODEL_ID_BYTES = 200
SWARM_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def signing_message(version: int, payload: bytes, domain: bytes) -> bytes:
    """What a signature covers; each kind of payload has its own domain tag, so one is never taken for another."""
    return domain + version.to_bytes(4, "big") + payload


@dataclass(frozen=True)
class Envelope:
    """Signer, opaque payload bytes and a signature; everything meaningful is inside the payload."""

    version: int
    signer: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def sign(cls, identity: Identity, payload: bytes, domain: bytes, version: int = ENVELOPE_VERSION) -> Envelope:
        return cls(version, identity.public_key, payload, identity.sign(signing_message(version, payload, domain)))

    def verify(self, domain: bytes) -> bool:
        return verify_signature(self.signer, self.signature, signing_message(self.version, self.payload, domain))

    @property
    def signer_peer_id(self) -> str:
        return peer_id_base58(self.signer)

    def encode(self) -> bytes:
        message = pb.Envelope(version=self.version, signer=self.signer, payload=self.payload, signature=self.signature)
        return message.SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, frame: bytes) -> Envelope:
        message = parse_canonical(pb.Envelope, frame, "envelope")
        if len(message.signer) != PUBLIC_KEY_BYTES or len(message.signature) != SIGNATURE_BYTES:
            raise Rejected(Reason.MALFORMED, "signer must be 32 bytes and signature 64 bytes")
        return cls(message.version, message.signer, message.payload, message.signature)


def verified_envelope(frame: bytes, max_bytes: int, domain: bytes) -> Envelope:
    """Checks 1-4 (PROTOCOL.md §5), common to every signed payload: size, canonical envelope, version and the
    signature under the payload kind's domain tag."""
    if len(frame) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"{len(frame)} > {max_bytes} bytes")
    envelope = Envelope.decode(frame)
    if envelope.version != ENVELOPE_VERSION:
        raise Rejected(Reason.BAD_VERSION, f"version {envelope.version}, this node speaks envelope version {ENVELOPE_VERSION}")
    if not envelope.verify(domain):
        raise Rejected(Reason.BAD_SIGNATURE)
    return envelope


def parse_canonical(message_type: type, data: bytes, what: str):
    """Parse a protobuf message that must be in canonical form (PROTOCOL.md §2.1): re-encoded, it is the same bytes."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise Rejected(Reason.MALFORMED, f"{what} does not parse: {error}") from None
    # protobuf keeps unknown fields and re-encodes them verbatim; canonical form has none
    message.DiscardUnknownFields()
    if message.SerializeToString(deterministic=True) != data:
        raise Rejected(Reason.MALFORMED, f"{what} is not in canonical form")
    return message


def text_limit(value: str, limit: int, name: str) -> None:
    if len(value.encode()) > limit:
        raise Rejected(Reason.LIMIT_EXCEEDED, f"{name} longer than {limit} bytes")


def check_swarm_id(swarm_id: str) -> None:
    if not SWARM_ID_PATTERN.fullmatch(swarm_id):
        raise Rejected(Reason.BAD_VALUE, "swarm_id must match [a-z0-9][a-z0-9._-]*")


def check_timestamp(timestamp: float) -> None:
    if not (math.isfinite(timestamp) and timestamp > 0):
        raise Rejected(Reason.BAD_VALUE, "timestamp must be a positive finite number")
