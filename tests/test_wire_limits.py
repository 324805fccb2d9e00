"""The wire's hard limits and the identity's safety checks at their exact boundaries: one byte, bit or permission
over is refused with its reason and the value at the limit is accepted (what mutation testing found unguarded)."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import os
import stat
from collections.abc import Callable

import pytest
from test_signature import small_order_encodings

from swarmnode.wire import identity as identity_module
from swarmnode.wire.address import Reachability, canonical_host
from swarmnode.wire.batch import BATCH, MAX_COMPLETION_BYTES, MAX_COMPLETIONS_PER_ROLLOUT, MAX_ENVELOPE_BYTES
from swarmnode.wire.beacon import BEACON, Beacon, showable
from swarmnode.wire.envelope import ENVELOPE_VERSION, MAX_MODEL_ID_BYTES, MAX_SWARM_ID_BYTES, Envelope
from swarmnode.wire.identity import (
    Identity,
    IdentityError,
    canonical_point,
    load_identity,
    peer_id_base58,
    save_identity,
    verify_signature,
)
from swarmnode.wire.presence import PRESENCE, Presence
from swarmnode.wire.receive import VerifiedFrames, open_frame
from swarmnode.wire.record import Kind
from swarmnode.wire.rejection import Reason, Rejected
from swarmnode.wire.rollout import Completion, Rollout, RolloutBatch, TaskRef
from swarmnode.wire.rules import Slot, SwarmRules

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
ALICE = Identity.from_seed(b"\x11" * 32)
T0 = 1_800_000_000.0
TASK = TaskRef("chain_sum", "0123456789abcdef", 5, 17)


def make_batch(**changes) -> RolloutBatch:
    batch = RolloutBatch(
        swarm_id="test-swarm", window=60_000_000, sequence=3, timestamp=T0, model_id="swarmnode/seed",
        suite_version="v", rollouts=(Rollout(TASK, (Completion("<answer>3</answer>", 1.0),)),),
    )
    return dataclasses.replace(batch, **changes)


VALID = BATCH.seal(make_batch(), ALICE)


def reason_of(frame: bytes) -> Reason:
    with pytest.raises(Rejected) as info:
        open_frame(frame, BATCH)
    return info.value.reason


# --- the envelope: size, field lengths, version, canonical form -------------------------------------------------


def batch_frame_of_size(size: int) -> bytes:
    """A valid signed batch of exactly `size` bytes: full-size completions, the last one trimmed to fit."""
    full = Completion("x" * MAX_COMPLETION_BYTES)

    def frame(last: int) -> bytes:
        rollouts = (Rollout(TASK, (full,) * MAX_COMPLETIONS_PER_ROLLOUT),
                    Rollout(TASK, (full,) * (MAX_COMPLETIONS_PER_ROLLOUT - 1) + (Completion("x" * last),)))
        return BATCH.seal(make_batch(rollouts=rollouts), ALICE)

    last = MAX_COMPLETION_BYTES // 2
    for _ in range(4):
        last += size - len(frame(last))
    result = frame(last)
    assert len(result) == size
    return result


def test_a_frame_of_exactly_the_size_limit_opens_and_one_byte_more_is_too_large():
    at_limit = batch_frame_of_size(MAX_ENVELOPE_BYTES)
    assert open_frame(at_limit, BATCH).signer == ALICE.peer_id
    assert reason_of(batch_frame_of_size(MAX_ENVELOPE_BYTES + 1)) is Reason.TOO_LARGE


@pytest.mark.parametrize(
    "signer, signature",
    [
        (ALICE.public_key[:31], None),
        (ALICE.public_key + b"\x00", None),
        (None, Envelope.decode(VALID).signature[:63]),
        (None, Envelope.decode(VALID).signature + b"\x00"),
    ],
    ids=["signer-31-bytes", "signer-33-bytes", "signature-63-bytes", "signature-65-bytes"],
)
def test_a_signer_or_signature_of_the_wrong_length_is_malformed_not_a_bad_signature(signer, signature):
    """Checked before the signature (MALFORMED), alone: the other field of the right length does not excuse it."""
    envelope = Envelope.decode(VALID)
    frame = dataclasses.replace(envelope, signer=signer or envelope.signer, signature=signature or envelope.signature)
    assert reason_of(frame.encode()) is Reason.MALFORMED


@pytest.mark.parametrize("version", [0, ENVELOPE_VERSION + 1, 2**32 - 1])
def test_a_correctly_signed_envelope_of_another_version_is_refused_as_bad_version(version):
    frame = Envelope.sign(ALICE, Envelope.decode(VALID).payload, BATCH.domain, version=version).encode()
    assert reason_of(frame) is Reason.BAD_VERSION


@pytest.mark.parametrize(
    "frame",
    [
        b"\x08\x01" + VALID,  # the version field twice (the last one wins when parsing)
        b"\x08\x00" + VALID,  # an explicit default: version 0, then 1
        b"\x08\x81\x00" + VALID[2:],  # version 1 as an overlong varint
        VALID + b"\x28\x01",  # an unknown field 5
    ],
    ids=["repeated-field", "explicit-default", "overlong-varint", "unknown-field"],
)
def test_a_non_canonical_encoding_of_a_validly_signed_envelope_is_malformed(frame):
    """The signature covers the payload, not the envelope's bytes: only the canonical-form check refuses these."""
    assert Envelope.decode(VALID).verify(BATCH.domain)
    with pytest.raises(Rejected, match="not in canonical form") as info:
        open_frame(frame, BATCH)
    assert info.value.reason is Reason.MALFORMED


def test_a_verified_envelope_cannot_be_altered_afterwards():
    envelope = Envelope.decode(VALID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.payload = b"other"  # type: ignore[misc]
    assert hash(envelope) == hash(Envelope.decode(VALID))


# --- the payload's shared text rules: byte limits and the timestamp ---------------------------------------------


def test_a_swarm_id_of_exactly_the_limit_is_accepted_and_one_byte_more_is_refused():
    at_limit = "s" * MAX_SWARM_ID_BYTES
    assert MAX_SWARM_ID_BYTES == 64  # protocol/PROTOCOL.md's limits: what every implementation agrees on
    assert open_frame(BATCH.seal(make_batch(swarm_id=at_limit), ALICE), BATCH).value.swarm_id == at_limit
    assert reason_of(BATCH.seal(make_batch(swarm_id=at_limit + "s"), ALICE)) is Reason.LIMIT_EXCEEDED


def test_a_model_id_of_exactly_the_limit_in_utf8_bytes_is_accepted_and_one_byte_more_is_refused():
    at_limit = "é" * (MAX_MODEL_ID_BYTES // 2)  # 2 bytes each: the limit counts bytes, not characters
    assert MAX_MODEL_ID_BYTES == 200 and len(at_limit.encode()) == MAX_MODEL_ID_BYTES  # protocol/PROTOCOL.md
    assert open_frame(BATCH.seal(make_batch(model_id=at_limit), ALICE), BATCH).value.model_id == at_limit
    assert reason_of(BATCH.seal(make_batch(model_id=at_limit + "m"), ALICE)) is Reason.LIMIT_EXCEEDED


@pytest.mark.parametrize("timestamp", [0.0, -0.0, -0.5, -1.0, -T0, math.nan, math.inf, -math.inf])
def test_a_timestamp_that_is_not_positive_and_finite_is_a_bad_value(timestamp):
    assert reason_of(BATCH.seal(make_batch(timestamp=timestamp), ALICE)) is Reason.BAD_VALUE


@pytest.mark.parametrize("timestamp", [5e-324, 0.5, 1.0])
def test_any_positive_finite_timestamp_is_valid_even_just_above_zero(timestamp):
    assert open_frame(BATCH.seal(make_batch(timestamp=timestamp), ALICE), BATCH).value.timestamp == timestamp


# --- strict Ed25519: what OpenSSL accepts and the node must not --------------------------------------------------


def clamped_scalar(seed: bytes) -> int:
    """RFC 8032 §5.1.5: the secret scalar of `seed`, so a test can sign with a chosen R."""
    digest = bytearray(hashlib.sha512(seed).digest()[:32])
    digest[0] &= 248
    digest[31] = (digest[31] & 127) | 64
    return int.from_bytes(digest, "little")


def forgery_under(key: bytes) -> tuple[bytes, bytes]:
    """(signature, message) valid under RFC 8032's equation for a key of small order, by someone without its
    private key: R = [r]B, S = r, and a message whose challenge k kills the key ([k]A = identity when 8 | k)."""
    seed = b"\x09" * 32
    r_point, r = Identity.from_seed(seed).public_key, clamped_scalar(seed) % L
    for attempt in range(1000):
        message = b"pay %d to mallory" % attempt
        if int.from_bytes(hashlib.sha512(r_point + key + message).digest(), "little") % L % 8 == 0:
            return r_point + r.to_bytes(32, "little"), message
    raise AssertionError("no message found")


def non_canonical_small_order_encodings() -> list[bytes]:
    """y = p and y = p + 1 are y = 0 and y = 1 unreduced: points of order 4 and 1, under either sign bit."""
    return [(y | sign << 255).to_bytes(32, "little") for y in (P, P + 1) for sign in (0, 1)]


@pytest.mark.parametrize(
    "key",
    small_order_encodings() + non_canonical_small_order_encodings(),
    ids=lambda key: key.hex()[:4] + key.hex()[-4:],
)
def test_a_forgery_under_a_small_order_key_that_openssl_accepts_is_refused(key):
    signature, message = forgery_under(key)
    # the forgery is real: the library alone accepts it
    identity_module.Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    assert not verify_signature(key, signature, message)


def test_a_point_encoding_is_canonical_exactly_when_its_y_is_below_p_whatever_its_sign_bit():
    for sign in (0, 1):
        for y in (0, 1, 2**254, P - 1):
            assert canonical_point((y | sign << 255).to_bytes(32, "little")), (y, sign)
        for y in (P, P + 1, P + 18, 2**255 - 1):
            assert not canonical_point((y | sign << 255).to_bytes(32, "little")), (y, sign)


class AcceptsEverySignature:
    """Stands in for the library's Ed25519 verification and accepts everything, so that what refuses a signature
    is verify_signature's own strict checks (PROTOCOL.md §2.2), which must not depend on a library's version."""

    @classmethod
    def from_public_bytes(cls, data: bytes) -> AcceptsEverySignature:
        return cls()

    def verify(self, signature: bytes, message: bytes) -> None:
        return None


@pytest.fixture
def lenient_library(monkeypatch):
    monkeypatch.setattr(identity_module, "Ed25519PublicKey", AcceptsEverySignature)
    key, signature = ALICE.public_key, ALICE.sign(b"m")
    assert verify_signature(key, signature, b"m") and verify_signature(key, signature, b"another message")
    return key, signature


def test_s_is_refused_from_l_upwards_by_the_strict_checks_alone(lenient_library):
    key, signature = lenient_library
    assert verify_signature(key, signature[:32] + (L - 1).to_bytes(32, "little"), b"m")
    for s in (L, L + 1, 2**256 - 1):
        assert not verify_signature(key, signature[:32] + s.to_bytes(32, "little"), b"m"), s


@pytest.mark.parametrize("key_change, signature_change", [
    (lambda key: key[:31], None),
    (lambda key: key + b"\x00", None),
    (None, lambda signature: signature[:63]),
    (None, lambda signature: signature + b"\x00"),
], ids=["key-31-bytes", "key-33-bytes", "signature-63-bytes", "signature-65-bytes"])
def test_a_key_or_signature_of_the_wrong_length_is_refused_by_the_strict_checks_alone(
    lenient_library, key_change, signature_change
):
    key, signature = lenient_library
    key = key_change(key) if key_change else key
    signature = signature_change(signature) if signature_change else signature
    assert verify_signature(key, signature, b"m") is False


def test_a_non_canonical_r_is_refused_by_the_strict_checks_alone(lenient_library):
    key, signature = lenient_library
    for y in range(P, 2**255):
        assert not verify_signature(key, y.to_bytes(32, "little") + signature[32:], b"m"), y


def test_a_malformed_key_never_gets_a_peer_id():
    assert peer_id_base58(ALICE.public_key) == ALICE.peer_id
    for key in (ALICE.public_key[:31], ALICE.public_key + b"\x00"):
        with pytest.raises(ValueError, match="32 bytes"):
            peer_id_base58(key)


# --- the identity file ------------------------------------------------------------------------------------------


def test_a_key_saved_into_missing_directories_is_private_and_loads_back(tmp_path):
    path = tmp_path / "a" / "b" / "identity.key"
    save_identity(ALICE, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path).peer_id == ALICE.peer_id


def test_saving_over_an_existing_key_is_refused_unless_overwrite_is_named(tmp_path):
    path = tmp_path / "identity.key"
    other = Identity.from_seed(b"\x22" * 32)
    save_identity(ALICE, path)
    with pytest.raises(IdentityError, match="already exists"):
        save_identity(other, path)
    with pytest.raises(TypeError):
        save_identity(other, path, True)  # type: ignore[misc]  # the destructive flag is keyword-only
    assert load_identity(path).peer_id == ALICE.peer_id
    save_identity(other, path, overwrite=True)
    assert load_identity(path).peer_id == other.peer_id


def write_key(path, data: bytes, mode: int = 0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "data, size",
    [
        (ALICE.to_libp2p_bytes() + b"\x00", 69),  # a trailing byte: the key itself is intact
        (ALICE.to_libp2p_bytes()[:67], 67),
        (b"\x08\x00" + ALICE.to_libp2p_bytes()[2:], 68),  # key type 0 (RSA), an Ed25519 key's bytes
    ],
    ids=["trailing-byte", "truncated", "other-key-type"],
)
def test_a_key_file_that_is_not_exactly_an_ed25519_libp2p_key_is_refused_naming_the_file(tmp_path, data, size):
    path = write_key(tmp_path / "identity.key", data)
    with pytest.raises(IdentityError, match="not an Ed25519 libp2p private key") as info:
        load_identity(path)
    assert f"({size} bytes)" in str(info.value) and f"--path {path}" in str(info.value)


@pytest.mark.parametrize("stored_first_byte", [0x00, 0xFF], ids=["sorts-below", "sorts-above"])
def test_a_key_file_whose_stored_public_key_is_not_its_private_keys_is_refused_as_corrupted(tmp_path, stored_first_byte):
    data = ALICE.to_libp2p_bytes()
    assert 0x00 < data[36] < 0xFF  # ALICE's public key sorts between both corruptions
    path = write_key(tmp_path / "identity.key", data[:36] + bytes([stored_first_byte]) + data[37:])
    with pytest.raises(IdentityError, match="does not match the private key"):
        load_identity(path)


def test_a_missing_key_file_is_an_identity_error_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "identity.key"
    with pytest.raises(IdentityError, match="no identity file") as info:
        load_identity(path)
    assert f"swarmnode identity new --path {path}" in str(info.value)


@pytest.mark.parametrize("bit", [0o040, 0o020, 0o010, 0o004, 0o002, 0o001])
def test_a_key_file_with_any_group_or_other_permission_is_refused(tmp_path, bit):
    path = write_key(tmp_path / "identity.key", ALICE.to_libp2p_bytes(), 0o600 | bit)
    with pytest.raises(IdentityError, match=f"permissions {0o600 | bit:04o}.*chmod 600"):
        load_identity(path)


def test_a_key_file_readable_by_its_owner_alone_loads(tmp_path):
    for mode in (0o600, 0o400):
        path = write_key(tmp_path / f"identity-{mode:o}.key", ALICE.to_libp2p_bytes(), mode)
        assert load_identity(path).peer_id == ALICE.peer_id


def load_as_unprivileged_user(directory, name: str) -> str:
    """load_identity(directory / name) by uid and gid 65534 in a forked child (root reads every file), as the
    outcome's text: the child already has swarmnode loaded, and finds the file relative to its directory."""
    os.chmod(directory, 0o711)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.chdir(directory)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                outcome = f"loaded {load_identity(name).peer_id}"
            except BaseException as error:  # whatever it is, the parent reports it
                outcome = f"{type(error).__name__}: {error}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_a_key_file_the_node_cannot_read_is_an_identity_error_naming_the_file(tmp_path):
    path = write_key(tmp_path / "identity.key", ALICE.to_libp2p_bytes(), 0o000)
    if os.geteuid() != 0:
        with pytest.raises(IdentityError) as info:
            load_identity(path)
        outcome = f"{type(info.value).__name__}: {info.value}"
        name = str(path)
    else:
        outcome, name = load_as_unprivileged_user(tmp_path, path.name), path.name
    assert outcome.startswith(f"IdentityError: {name}: cannot read the identity file"), outcome


# --- presence entries (PROTOCOL.md §4.1) and the batch's per-item limits ----------------------------------------

RULES = SwarmRules("test-swarm")
PRESENCE_WINDOW = RULES.window_of(T0)


def public_addresses(count: int) -> tuple[str, ...]:
    """`count` distinct addresses of the canonical /ip4/HOST/tcp/PORT form a PUBLIC signer lists."""
    return tuple(f"/ip4/127.0.0.1/tcp/{4000 + index}" for index in range(1, count + 1))


def make_presence(**changes) -> Presence:
    presence = Presence("test-swarm", PRESENCE_WINDOW, T0, Reachability.PUBLIC, public_addresses(1))
    return dataclasses.replace(presence, **changes)


def batch_with_family_of(size: int) -> RolloutBatch:
    return make_batch(rollouts=(Rollout(dataclasses.replace(TASK, family="f" * size), (Completion("x"),)),))


def batch_with_token_logprobs(count: int) -> RolloutBatch:
    return make_batch(rollouts=(Rollout(TASK, (Completion("x", 1.0, (-0.5,) * count),)),))


def presence_with_addresses(count: int) -> Presence:
    return make_presence(addresses=public_addresses(count))


@pytest.mark.parametrize(
    "kind, build, limit",
    [  # protocol/PROTOCOL.md's "Limits" table and §4.1 P6
        (BATCH, batch_with_family_of, 64),
        (BATCH, batch_with_token_logprobs, 4096),
        (PRESENCE, presence_with_addresses, 4),
    ],
    ids=["family-bytes", "token-logprobs", "presence-addresses"],
)
def test_a_family_logprob_list_or_address_list_at_its_protocol_limit_opens_and_one_more_is_refused(
    kind: Kind, build: Callable[[int], object], limit: int
):
    """protocol/PROTOCOL.md's limits, written out: every implementation agrees on where each edge lies."""
    assert open_frame(kind.seal(build(limit), ALICE), kind).value == build(limit)
    with pytest.raises(Rejected) as info:
        open_frame(kind.seal(build(limit + 1), ALICE), kind)
    assert info.value.reason is Reason.LIMIT_EXCEEDED


@pytest.mark.parametrize("offset", [-1, 1], ids=["older-directory", "newer-directory"])
def test_a_presence_read_from_another_windows_directory_is_a_key_mismatch(offset: int):
    """An entry copied into an older or a newer window's directory does not list its signer there."""
    frame = PRESENCE.seal(make_presence(), ALICE)
    own = open_frame(frame, PRESENCE, RULES, slot=Slot(PRESENCE_WINDOW, None, ALICE.peer_id))
    assert own.value == make_presence()
    with pytest.raises(Rejected) as info:
        open_frame(frame, PRESENCE, RULES, slot=Slot(PRESENCE_WINDOW + offset, None, ALICE.peer_id))
    assert info.value.reason is Reason.KEY_MISMATCH


def test_a_parsed_presence_shared_by_its_readers_cannot_be_altered_by_one_of_them():
    """The validator and the collector get the same parsed entry from VerifiedFrames: neither may change it."""
    verified = VerifiedFrames()
    frame = PRESENCE.seal(make_presence(), ALICE)
    first = open_frame(frame, PRESENCE, verified=verified).value
    assert open_frame(frame, PRESENCE, verified=verified).value is first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.window = PRESENCE_WINDOW + 1  # type: ignore[misc]
    assert first == make_presence()


# --- census beacons (PROTOCOL.md §4.2) and the canonical text of an address (§4.1) -------------------------------

MAX_RATE_PER_HOUR = 1e7  # PROTOCOL.md §4.2 B7: rounds_per_hour and rollouts_per_hour lie in [0, 10^7]


def make_beacon(**changes) -> Beacon:
    beacon = Beacon("test-swarm", PRESENCE_WINDOW, T0, "swarmnode/0.1.0", "swarmnode/seed", round=12,
                    rounds_per_hour=60.0, rollouts_per_hour=480.0, phase="train")
    return dataclasses.replace(beacon, **changes)


def beacon_reason(beacon: Beacon) -> Reason:
    with pytest.raises(Rejected) as info:
        open_frame(BEACON.seal(beacon, ALICE), BEACON, RULES)
    return info.value.reason


@pytest.mark.parametrize(
    "kind, value, field",
    [(BEACON, make_beacon(), "rounds_per_hour"), (BATCH, make_batch(), "sequence")],
    ids=["beacon", "batch"],
)
def test_a_parsed_beacon_or_batch_shared_by_its_readers_cannot_be_altered_by_one_of_them(
    kind: Kind, value: object, field: str
):
    """VerifiedFrames hands every reader the same parsed value: none of them may change it for the others."""
    verified = VerifiedFrames()
    frame = kind.seal(value, ALICE)
    first = open_frame(frame, kind, verified=verified).value
    assert open_frame(frame, kind, verified=verified).value is first
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(first, field, 1)
    assert first == value


@pytest.mark.parametrize("field", ["rounds_per_hour", "rollouts_per_hour"])
def test_a_beacon_rate_of_exactly_the_protocol_maximum_opens_and_the_next_float32_above_is_a_bad_value(field: str):
    """The rates are float32 on the wire, whose next value above 10^7 is 10^7 + 1: the first one refused."""
    at_limit = make_beacon(**{field: MAX_RATE_PER_HOUR})
    assert getattr(open_frame(BEACON.seal(at_limit, ALICE), BEACON, RULES).value, field) == MAX_RATE_PER_HOUR
    assert beacon_reason(make_beacon(**{field: MAX_RATE_PER_HOUR + 1})) is Reason.BAD_VALUE


@pytest.mark.parametrize("rate", [-0.5, -1e-45, -1.0, math.nan, math.inf], ids=str)
@pytest.mark.parametrize("field", ["rounds_per_hour", "rollouts_per_hour"])
def test_a_beacon_rate_that_is_negative_or_not_finite_is_a_bad_value(field: str, rate: float):
    """-1e-45 is sent as the float32 closest below zero: the range starts at 0 itself, not at some negative bound."""
    assert beacon_reason(make_beacon(**{field: rate})) is Reason.BAD_VALUE


def test_a_beacon_rate_of_zero_opens():
    """A node that has not completed a round yet reports 0, the low end of the closed range."""
    quiet = make_beacon(rounds_per_hour=0.0, rollouts_per_hour=0.0)
    assert open_frame(BEACON.seal(quiet, ALICE), BEACON, RULES).value == quiet


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),  # no zero group: all eight written, the last one included
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  # RFC 5952 §4.2.2: a single zero group stays "0"
        ("2001:DB8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),  # equal runs: the first one, lowercase
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),  # the longest run, even when it comes second
        ("0:0:0:0:0:0:0:0", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("::ffff:1.2.3.4", "::ffff:102:304"),  # never in mixed IPv4 notation (PROTOCOL.md §4.1)
    ],
)
def test_canonical_host_writes_the_rfc_5952_text_every_implementation_agrees_on(text: str, canonical: str):
    """PROTOCOL.md §4.1: one text per address, so that a peer's advertised address is accepted byte for byte."""
    assert ipaddress.ip_address(canonical) == ipaddress.ip_address(text)
    assert canonical_host(text) == canonical
    assert canonical_host(canonical) == canonical


# PROTOCOL.md §4.2's closed ranges of code points that are not showable, written out from the spec
PROTOCOL_UNSHOWABLE = [
    (0x0000, 0x001F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x061C, 0x061C), (0x115F, 0x1160), (0x1680, 0x1680),
    (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F), (0x3000, 0x3000), (0x3164, 0x3164),
    (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB), (0xE0000, 0xE007F),
    (0xF0000, 0x10FFFF),
]


def unshowable_in_protocol(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in PROTOCOL_UNSHOWABLE)


@pytest.mark.parametrize("low, high", PROTOCOL_UNSHOWABLE, ids=lambda bound: f"{bound:04X}")
def test_each_unshowable_range_of_the_protocol_ends_exactly_where_the_spec_says(low: int, high: int):
    """Both ends of a range are refused and the code points just outside it are showable, unless another range
    holds them: every receiver must give a beacon's text the same verdict (PROTOCOL.md §4.2)."""
    assert not showable(chr(low)) and not showable(chr(high))
    for outside in (low - 1, high + 1):
        if 0 <= outside <= 0x10FFFF:
            assert showable(chr(outside)) is not unshowable_in_protocol(outside), hex(outside)
