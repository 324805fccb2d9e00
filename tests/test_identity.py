import asyncio
import os
import stat

import pytest
from typer.testing import CliRunner

from swarmnode.cli import app
from swarmnode.wire.identity import Identity, IdentityError, load_identity, load_or_create_identity, save_identity


def test_new_identity_file_is_private_and_round_trips(tmp_path):
    path = tmp_path / "id.key"
    identity = load_or_create_identity(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_identity(path).peer_id == identity.peer_id
    assert identity.peer_id.startswith("12D3KooW")


def test_group_readable_key_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "id.key"
    save_identity(Identity.generate(), path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(path)


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x12\x40" + bytes(64), os.urandom(68), b"x" * 1000])
def test_malformed_key_file_is_refused(tmp_path, content):
    path = tmp_path / "id.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="identity new"):
        load_identity(path)


def test_swapped_public_key_is_detected(tmp_path):
    data = bytearray(Identity.generate().to_libp2p_bytes())
    data[-32:] = Identity.generate().public_key
    with pytest.raises(IdentityError, match="does not match"):
        Identity.from_libp2p_bytes(bytes(data))


def test_cli_new_refuses_to_overwrite_and_show_prints_the_same_peer_id(tmp_path):
    runner = CliRunner()
    path = tmp_path / "node" / "identity.key"
    created = runner.invoke(app, ["identity", "new", "--path", str(path)])
    assert created.exit_code == 0, created.output
    again = runner.invoke(app, ["identity", "new", "--path", str(path)])
    assert again.exit_code == 1 and "--force" in again.output
    shown = runner.invoke(app, ["identity", "show", "--path", str(path)])
    peer_id = load_identity(path).peer_id
    assert shown.exit_code == 0 and f"peer_id    {peer_id}" in shown.output
    assert load_identity(path).public_key.hex() in shown.output
    forced = runner.invoke(app, ["identity", "new", "--path", str(path), "--force"])
    assert forced.exit_code == 0 and load_identity(path).peer_id != peer_id


@pytest.mark.network
def test_p2pd_started_with_the_key_file_has_the_same_peer_id(tmp_path):
    from hivemind.p2p import P2P

    path = tmp_path / "identity.key"
    identity = load_or_create_identity(path)

    async def started_peer_id() -> str:
        p2p = await P2P.create(
            identity_path=str(path), host_maddrs=["/ip4/127.0.0.1/tcp/0"], nat_port_map=False, auto_nat=False
        )
        try:
            return p2p.peer_id.to_base58()
        finally:
            await p2p.shutdown()

    assert asyncio.run(started_peer_id()) == identity.peer_id
