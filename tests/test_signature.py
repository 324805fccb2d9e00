"""Strict Ed25519 (PROTOCOL.md §2.2): no key of small order, no non-canonical encoding, S below L.

The small-order points are found here by independent Edwards-curve arithmetic, not copied from the code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmnode.wire.identity import Identity, verify_signature

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY_R = bytes([1]) + bytes(31)


def recover_x(y: int, sign: int) -> int | None:
    """RFC 8032 §5.1.3 point decoding."""
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u % P or (x == 0 and sign):
        return None
    return P - x if x & 1 != sign else x


def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P


def encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def sqrt_mod_p(value: int) -> int | None:
    root = pow(value, (P + 3) // 8, P)
    if root * root % P != value % P:
        root = root * SQRT_M1 % P
    return root if root * root % P == value % P else None


def torsion_points() -> list[tuple[int, int]]:
    """The 8 points of order dividing 8 of -x^2 + y^2 = 1 + d x^2 y^2: (0, 1), (0, -1), (+-sqrt(-1), 0), and
    the 4 points Q whose double has y = 0. Doubling gives y(2Q) = (y^2 + x^2) / (1 - d x^2 y^2), so x^2 = -y^2,
    and then the curve equation reads d y^4 + 2 y^2 - 1 = 0: y^2 = (-1 +- sqrt(1 + d)) / d."""
    points = [(0, 1), (0, P - 1), (SQRT_M1, 0), (P - SQRT_M1, 0)]
    root = sqrt_mod_p((1 + D) % P)
    for y2 in ((-1 + root) * pow(D, P - 2, P) % P, (-1 - root) * pow(D, P - 2, P) % P):
        y = sqrt_mod_p(y2)
        if y is None:
            continue
        for yy in (y, P - y):
            for sign in (0, 1):
                x = recover_x(yy, sign)
                if x is not None:
                    points.append((x, yy))
    return points


def small_order_encodings() -> list[bytes]:
    points = torsion_points()
    encodings = {encode(point) for point in points}
    assert len(encodings) == 8, f"{len(encodings)} points of order dividing 8 found"
    for point in points:  # each really has order dividing 8
        total = point
        for _ in range(7):
            total = add(total, point)
        assert total == (0, 1)
    return sorted(encodings)


@pytest.mark.parametrize("encoding", small_order_encodings(), ids=lambda e: e.hex()[:8])
def test_a_key_of_small_order_verifies_nothing_not_even_the_universal_forgery(encoding):
    forged = IDENTITY_R + bytes(32)  # R = identity, S = 0: valid for every message under a small-order key
    assert not verify_signature(encoding, forged, b"any message")
    assert not verify_signature(encoding, encoding + bytes(32), b"any message")


def test_an_r_of_small_order_is_refused_even_with_an_honest_key():
    honest = Identity.from_seed(b"\x05" * 32)
    for encoding in small_order_encodings():
        assert not verify_signature(honest.public_key, encoding + bytes(32), b"m")


def test_non_canonical_key_and_r_encodings_are_refused():
    for y in range(P, 2**255):  # the 19 unreduced encodings
        encoding = y.to_bytes(32, "little")
        assert not verify_signature(encoding, IDENTITY_R + bytes(32), b"m")
        honest = Identity.from_seed(b"\x06" * 32)
        assert not verify_signature(honest.public_key, encoding + bytes(32), b"m")


def test_an_unreduced_s_is_refused_although_it_names_the_same_scalar():
    identity = Identity.from_seed(b"\x07" * 32)
    signature = identity.sign(b"m")
    s = int.from_bytes(signature[32:], "little")
    assert verify_signature(identity.public_key, signature, b"m")
    assert not verify_signature(identity.public_key, signature[:32] + (s + L).to_bytes(32, "little"), b"m")


@settings(max_examples=50, deadline=None)
@given(message=st.binary(max_size=256), seed=st.binary(min_size=32, max_size=32))
def test_honest_signatures_still_verify(message, seed):
    identity = Identity.from_seed(seed)
    assert verify_signature(identity.public_key, identity.sign(message), message)
