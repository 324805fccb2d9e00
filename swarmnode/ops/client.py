"""Reading a running node's endpoint: its /status for the dashboard and `swarmnode status`, its /census for
`swarmnode swarm --url`. What a node answers is size-checked before it is decoded."""

from __future__ import annotations

import json
import urllib.request

from swarmnode.net.census import Census
from swarmnode.ops.metrics import Status

MAX_RESPONSE_BYTES = 8 * 2**20  # a census of 8 buckets x 64 beacons is ~200 KB of JSON, a status less


def fetch_json(url: str, path: str, timeout_s: float) -> object:
    """GET {url}{path} as JSON; OSError (URLError included) when nobody answers, ValueError on a bad answer."""
    with urllib.request.urlopen(f"{url.rstrip('/')}{path}", timeout=timeout_s) as response:
        body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise ValueError(f"{url}{path} answered more than {MAX_RESPONSE_BYTES} bytes")
    return json.loads(body)


def fetch_status(url: str, timeout_s: float = 2.0) -> Status:
    return Status.from_json(fetch_json(url, "/status", timeout_s))


def fetch_census(url: str, timeout_s: float) -> Census:
    """A running node's census of every bucket; also KeyError/TypeError when the JSON is not a census."""
    return Census.from_json(fetch_json(url, "/census", timeout_s))
