"""A client of the control-plane VIP: GET /readyz through it in a bounded loop, every request
counted, from a lab namespace (in a thread of its own: setns is per thread)."""

from __future__ import annotations

import collections
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ironlb.lab import netns


@dataclass
class ReadyzClient:
    """GET `url` every `interval` from namespace `ns` until stopped or `limit` seconds; each
    request is one connection and lands in one bucket: "ok" (200 and the body "ok"),
    "wrong_answer", "http_<code>", or the error's type."""

    ns: str
    url: str
    cafile: Path
    limit: float = 60.0
    interval: float = 0.02
    timeout: float = 1.0
    results: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        tls = ssl.create_default_context(cafile=str(self.cafile))
        end = time.monotonic() + self.limit
        with netns.entered(self.ns):
            while not self._stop.is_set() and time.monotonic() < end:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(self.url, context=tls, timeout=self.timeout) as r:
                        body = r.read()
                        bucket = "ok" if r.status == 200 and body == b"ok" else "wrong_answer"
                except urllib.error.HTTPError as e:
                    bucket = f"http_{e.code}"
                except urllib.error.URLError as e:
                    bucket = type(e.reason).__name__
                except (TimeoutError, OSError) as e:
                    bucket = type(e).__name__
                self.results.append((started, bucket))
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> ReadyzClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.timeout + 5)

    def buckets(self) -> collections.Counter[str]:
        return collections.Counter(b for _, b in self.results)

    def failed(self) -> list[tuple[float, str]]:
        return [(t, b) for t, b in self.results if b != "ok"]

    def failures(self) -> int:
        return len(self.failed())

    def outage(self) -> float:
        """Seconds from the first failed request to the next good one after the last failure."""
        bad = [t for t, b in self.results if b != "ok"]
        if not bad:
            return 0.0
        after = [t for t, b in self.results if b == "ok" and t > bad[-1]]
        return (after[0] if after else time.monotonic()) - bad[0]


def wait_until(condition: Callable[[], object], within: float, interval: float = 0.05) -> float:
    """Poll `condition` until it is truthy; the seconds that took (AssertionError after
    `within`)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if condition():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not within {within}s")
