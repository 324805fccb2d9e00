"""The asyncio bridge: hivemind's DHT runs on an asyncio loop in a background thread, and the node's threads
hand it coroutines and wait with a timeout. Background hivemind tasks that die with a lost connection are
routine and go to the debug log, not the node's console."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)
_LOOP_SHUTDOWN_TIMEOUT_S = 10.0


class _ChildReapedAfterClose(logging.Filter):
    """A p2pd whose start failed may exit after our loop closed; asyncio's child watcher (Python 3.10) then
    prints "Loop ... that handles pid ... is closed" on stderr, under the node's one-line error. Nothing is lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Loop %r that handles pid")


logging.getLogger("asyncio").addFilter(_ChildReapedAfterClose())

class LoopThread:
    """An asyncio loop on a daemon thread; other threads submit coroutines and wait with a timeout."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_quietly)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
        """The coroutine's result; the builtin TimeoutError if the loop does not answer in time (before
        Python 3.11, concurrent.futures raises its own TimeoutError, which `except TimeoutError` misses)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the DHT loop did not answer within {timeout_s} s") from None

    def stop(self) -> None:
        async def cancel_remaining() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(TimeoutError, RuntimeError):
            self.run(cancel_remaining(), _LOOP_SHUTDOWN_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_LOOP_SHUTDOWN_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


def _log_quietly(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Background hivemind tasks that die with a lost connection (a peer left, p2pd stopped) are routine;
    they go to the debug log instead of printing a traceback on the node's console."""
    logger.debug("DHT loop: %s", context.get("message"), exc_info=context.get("exception"))
