"""What swarmnode relies on inside hivemind beyond its public API, checked against the installed release: if a
new hivemind changes one of these shapes, this fails by name instead of a node failing in the field. The pin in
pyproject.toml is the range these checks passed on."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hivemind.dht.node import Blacklist, DHTNode
from hivemind.dht.protocol import DHTProtocol, ValidationError
from hivemind.dht.routing import KBucket
from hivemind.dht.storage import DHTLocalStorage
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.p2p import P2P
from hivemind.utils.timed_storage import MAX_DHT_TIME_DISCREPANCY_SECONDS, TimedStorage
from packaging.specifiers import SpecifierSet

import swarmnode.net  # noqa: F401  hivemind below, imported the way the node imports it
from swarmnode.net.lazy_hivemind import LAZY_PACKAGES, names_of
from swarmnode.wire.rules import READ_CLOCK_SLACK_S

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def parameters(function) -> set[str]:
    return set(inspect.signature(function).parameters)


def test_the_installed_hivemind_is_in_the_pinned_range():
    specifier = SpecifierSet(re.search(r'"hivemind([^"]+)"', PYPROJECT.read_text()).group(1))
    assert importlib.metadata.version("hivemind") in specifier and specifier.contains("1.1.12")
    assert not specifier.contains("1.2.0"), "a new minor release must be checked here before it is allowed"


@pytest.mark.parametrize(
    ("function", "used"),
    [
        (P2P.create, {"initial_peers", "host_maddrs", "announce_maddrs", "identity_path", "check_if_identity_free",
                      "startup_timeout", "nat_port_map", "auto_nat", "use_relay"}),
        (P2P._call_unary_protobuf_handler, {"peer_id", "handle_name", "input", "output_protobuf_type"}),
        (P2P._add_protobuf_unary_handler, {"handle_name", "handler", "input_protobuf_type", "balanced"}),
        (DHTNode.create, {"p2p", "record_validator", "wait_timeout", "cache_locally", "cache_nearest", "cache_on_store",
                          "client_mode"}),
        (DHTNode.find_nearest_nodes, {"queries", "k_nearest", "beam_size", "exclude_self"}),
        (DHTNode.get_many_by_id, {"key_ids", "return_futures", "beam_size", "num_workers", "sufficient_expiration_time"}),
        (DHTProtocol.call_ping, {"peer", "validate", "strict"}),
        (DHTProtocol.call_store, {"peer", "keys", "values", "expiration_time", "subkeys"}),
        (DHTProtocol.update_routing_table, {"node_id", "peer_id", "responded"}),
        (Blacklist.register_failure, {"peer"}),
        (DHTLocalStorage.store_subkey, {"key", "subkey", "value", "expiration_time"}),
        (RecordValidatorBase.validate, {"record"}),
    ],
    ids=lambda item: getattr(item, "__qualname__", ""),
)
def test_the_hivemind_calls_we_make_and_override_keep_their_parameters(function, used):
    assert used <= parameters(function), f"{function.__qualname__} lost {sorted(used - parameters(function))}"


def test_the_hivemind_state_we_read_and_replace_is_where_we_look_for_it():
    """DHTPeer names p2pd's sockets through _UNIX_SOCKET_PREFIX and reads _child; BoundedRecordStorage compacts
    TimedStorage's heap; the node swaps the protocol's storage and cache and reads its routing table."""
    assert P2P._UNIX_SOCKET_PREFIX.startswith("/unix/")
    storage = TimedStorage()
    assert {"expiration_heap", "key_to_heap", "data"} <= set(vars(storage))
    assert {"key", "subkey", "value", "expiration_time"} == {field.name for field in DHTRecord.__dataclass_fields__.values()}
    assert "storage" in inspect.getsource(DHTProtocol.create) and "cache" in inspect.getsource(DHTProtocol.create)
    assert "_child" in inspect.getsource(P2P.create) and "create_subprocess_exec" in inspect.getsource(P2P)
    assert "routing_table" in inspect.getsource(DHTProtocol.create)
    assert "local time" in inspect.getsource(DHTProtocol) and issubclass(ValidationError, Exception)
    assert MAX_DHT_TIME_DISCREPANCY_SECONDS == READ_CLOCK_SLACK_S  # one clock rule for readers, hivemind's
    # routing.spare_unasked: a failed request's routing update is a task, so the lookup's blacklisting runs first
    assert "asyncio.create_task(self.update_routing_table(" in inspect.getsource(DHTProtocol.call_find)
    assert "self.blacklist.register_failure(peer_id)" in inspect.getsource(DHTNode._call_find_with_blacklist)
    # routing.ping_only_the_quiet: the protocol pings what the table's add_or_update_node returns, found on the table
    update = inspect.getsource(DHTProtocol.update_routing_table)
    assert "self.routing_table.add_or_update_node(node_id, peer_id)" in update and "call_ping(maybe_node_to_ping[1])" in update
    assert "nodes_requested_for_ping" in inspect.getsource(KBucket.request_ping_node)


RESOLVE = (
    "import importlib, json, sys\n"
    "lazy = sys.argv[1] == 'lazy'\n"
    "if lazy:\n"
    "    from swarmnode.net import lazy_hivemind\n"
    "from swarmnode.net.lazy_hivemind import LAZY_PACKAGES, names_of\n"
    "seen = {}\n"
    "for package in LAZY_PACKAGES:\n"
    "    module = importlib.import_module(package)\n"
    "    for name in names_of(package):\n"
    "        value = getattr(module, name)\n"
    "        seen[f'{package}.{name}'] = getattr(value, '__module__', None) or getattr(value, '__name__', repr(value))\n"
    "print(json.dumps(seen))\n"
)


def test_every_name_of_the_lazily_imported_hivemind_packages_is_what_the_real_packages_give():
    def resolved(mode: str) -> dict[str, str]:
        done = subprocess.run([sys.executable, "-c", RESOLVE, mode], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    lazily, really = resolved("lazy"), resolved("real")
    assert lazily == really and len(lazily) >= 30
    assert all(names_of(package) for package in LAZY_PACKAGES)
