"""A node's one Ed25519 key: it signs every envelope and is the libp2p identity of its DHT peer.

The file is a libp2p `PrivateKey` protobuf (key type Ed25519, 64 data bytes = seed || public key),
exactly what p2pd's `-id` flag reads, so the peer id the swarm sees is derived from the signing key.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from swarmnode.files import atomic_write_bytes

IDENTITY_FILENAME = "identity.key"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

# libp2p crypto.pb: PrivateKey/PublicKey { KeyType key_type = 1; bytes data = 2; }, Ed25519 = 1.
_ED25519_PRIVATE_PREFIX = bytes([0x08, 0x01, 0x12, 0x40])  # key_type=Ed25519, data: 64 bytes
_ED25519_PUBLIC_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])  # key_type=Ed25519, data: 32 bytes
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, 0x24])  # multihash "identity", 36 bytes follow


class IdentityError(Exception):
    """The identity file is missing, unsafe or malformed; the message names the file and the fix."""


def peer_id_bytes(public_key: bytes) -> bytes:
    """libp2p peer id of an Ed25519 key: the identity multihash of its protobuf-encoded public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return _IDENTITY_MULTIHASH_PREFIX + _ED25519_PUBLIC_PREFIX + public_key


def peer_id_base58(public_key: bytes) -> str:
    """The peer id as hivemind and libp2p print it ("12D3KooW...")."""
    return base58.b58encode(peer_id_bytes(public_key)).decode()


def public_key_of(peer_id: str) -> bytes:
    """The Ed25519 public key an Ed25519 peer id embeds; ValueError for any other text."""
    try:
        raw = base58.b58decode(peer_id)
    except ValueError:
        raise ValueError(f"{peer_id!r} is not a base58 peer id") from None
    prefix = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PUBLIC_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise ValueError(f"{peer_id!r} is not the peer id of an Ed25519 key")
    return raw[len(prefix):]


# Strict Ed25519 (PROTOCOL.md §2.2), as libsodium verifies: OpenSSL alone accepts a signature R = identity,
# S = 0 under a small-order key for *every* message, so anyone could sign as that peer id.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# Points of order 1, 2, 4 and 8, with the sign bit cleared (libsodium's ge25519_has_small_order list).
_SMALL_ORDER = frozenset(
    bytes.fromhex(text)
    for text in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1, the identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1, order 2
    )
)


def canonical_point(encoding: bytes) -> bool:
    """The encoded y coordinate is reduced (y < p): each point has exactly one accepted encoding."""
    return int.from_bytes(encoding, "little") & ((1 << 255) - 1) < _P


def small_order_point(encoding: bytes) -> bool:
    return encoding[:31] + bytes([encoding[31] & 0x7F]) in _SMALL_ORDER


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid strict Ed25519 signature of `message`: S reduced below L, the key
    and R canonical and of large order, then RFC 8032 verification; any malformed input is False."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    r, s = signature[:32], signature[32:]
    if int.from_bytes(s, "little") >= _L:
        return False
    if not (canonical_point(public_key) and canonical_point(r)):
        return False
    if small_order_point(public_key) or small_order_point(r):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """An Ed25519 private key with the views the rest of the node needs."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity, for test vectors and reproducible local swarms."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def peer_id(self) -> str:
        return peer_id_base58(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def to_libp2p_bytes(self) -> bytes:
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return _ED25519_PRIVATE_PREFIX + seed + self.public_key

    @classmethod
    def from_libp2p_bytes(cls, data: bytes, source: str = "identity") -> Identity:
        if len(data) != len(_ED25519_PRIVATE_PREFIX) + 64 or not data.startswith(_ED25519_PRIVATE_PREFIX):
            raise IdentityError(
                f"{source}: not an Ed25519 libp2p private key ({len(data)} bytes); "
                f"create a new one with `swarmnode identity new --path {source} --force`"
            )
        seed, public_key = data[4:36], data[36:68]
        identity = cls.from_seed(seed)
        if identity.public_key != public_key:
            raise IdentityError(
                f"{source}: the stored public key does not match the private key (file corrupted); "
                f"create a new one with `swarmnode identity new --path {source} --force`"
            )
        return identity


def save_identity(identity: Identity, path: Path, *, overwrite: bool = False) -> None:
    """Write the key with mode 0600, atomically; refuse to replace an existing key unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise IdentityError(f"{path}: an identity already exists; pass --force to replace it (its peer id is lost)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, identity.to_libp2p_bytes(), mode=0o600)


def load_identity(path: Path) -> Identity:
    """Read a key file, refusing one that other users can read (a leaked key is a stolen peer id)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"{path}: no identity file; create one with `swarmnode identity new --path {path}`")
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise IdentityError(
            f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} let other users read the key; "
            f"fix with `chmod 600 {path}`"
        )
    try:
        data = path.read_bytes()
    except PermissionError:
        raise IdentityError(f"{path}: cannot read the identity file (permission denied); check its owner")
    return Identity.from_libp2p_bytes(data, source=str(path))


def load_or_create_identity(path: Path) -> Identity:
    """The node's start-up path: first run creates the key, later runs must find it intact."""
    path = Path(path)
    if not path.exists():
        save_identity(Identity.generate(), path)
    return load_identity(path)

