"""The node's HTTP endpoint: /metrics (Prometheus text), /status (the dashboard's JSON snapshot) and /census,
bound to the configured host only (loopback by default)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from swarmnode.net.census import Census
from swarmnode.ops.metrics import Metrics


class EndpointError(Exception):
    """The endpoint cannot listen; the message names the address and the fix."""


def serve(metrics: Metrics, host: str, port: int, census: Callable[[], Census] | None = None) -> ThreadingHTTPServer:
    """Serve /metrics (Prometheus text), /status (JSON) and, given `census`, /census (JSON of a census of
    every bucket: `swarmnode swarm --url`) from a daemon thread."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                body, kind = generate_latest(metrics.registry), CONTENT_TYPE_LATEST
            elif self.path == "/status":
                body, kind = json.dumps(metrics.snapshot()).encode(), "application/json"
            elif self.path == "/census" and census is not None:
                try:
                    body, kind = json.dumps(census().to_json()).encode(), "application/json"
                except Exception as error:  # the DHT is closing or its loop is stuck: say so, keep serving
                    self.send_error(503, "census failed", explain=f"{type(error).__name__}: {error}")
                    return
            else:
                self.send_error(404, "try /metrics, /status or /census (with gossip and beacons on)")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as error:
        raise EndpointError(
            f"metrics endpoint {host}:{port}: {error.strerror or error}; pick another --metrics-port (0 = any free "
            f"port) or stop the program using it"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="swarmnode-metrics", daemon=True).start()
    return server
