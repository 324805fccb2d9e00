"""A stock hivemind DHT client (hivemind only, no swarmnode code): joins, reads a key, tries to store junk.

Prints one JSON line: {"read": {subkey: value hex}, "stored": bool} for the key and subkey given.
Usage: python tests/stock_hivemind_client.py --initial-peer MADDR --key KEY --subkey SUBKEY
"""

from __future__ import annotations

import argparse
import json
import sys

import hivemind
from hivemind.utils import get_dht_time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--initial-peer", action="append", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--subkey", required=True)
    args = parser.parse_args()
    dht = hivemind.DHT(
        initial_peers=args.initial_peer, host_maddrs=["/ip4/127.0.0.1/tcp/0"], client_mode=True, start=True,
        nat_port_map=False, auto_nat=False,  # stay on loopback: no UPnP/NAT-PMP probes of the LAN
    )
    try:
        found = dht.get(args.key, latest=True)
        read = {subkey: item.value.hex() for subkey, item in found.value.items()} if found else {}
        stored = dht.store(args.key, b"junk", get_dht_time() + 30, subkey=args.subkey)
    finally:
        dht.shutdown()
    print(json.dumps({"read": read, "stored": bool(stored)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
