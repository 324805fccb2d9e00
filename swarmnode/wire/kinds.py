"""The registry of record kinds: every kind of signed record the protocol knows, by name, and which one a frame
is (each kind signs under its own domain tag, so a valid signature tells the kind)."""

from __future__ import annotations

from swarmnode.wire.batch import BATCH
from swarmnode.wire.beacon import BEACON
from swarmnode.wire.envelope import Envelope
from swarmnode.wire.presence import PRESENCE
from swarmnode.wire.record import Kind
from swarmnode.wire.rejection import Rejected

KINDS: dict[str, Kind] = {kind.name: kind for kind in (BATCH, PRESENCE, BEACON)}


def kind_of_frame(frame: bytes) -> Kind | None:
    """The kind whose domain tag the frame's signature verifies under; None when it verifies under none (or is no
    envelope at all)."""
    try:
        envelope = Envelope.decode(frame)
    except Rejected:
        return None
    return next((kind for kind in KINDS.values() if envelope.verify(kind.domain)), None)
