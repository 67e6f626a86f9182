"""A pool of OpenAI-compatible endpoints (several vLLM servers behind one client), on httpx's async client.

Example:
    >>> from refine.rewards.backends.pool import EndpointPool, parse_endpoints
    >>> parse_endpoints("http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1/")
    ['http://10.0.0.1:8000/v1', 'http://10.0.0.2:8000/v1']
    >>> pool = EndpointPool(parse_endpoints(["http://127.0.0.1:8000/v1"]), max_concurrency=4)
    >>> [(s["url"], s["state"]) for s in pool.stats()]
    [('http://127.0.0.1:8000/v1', 'closed')]
    >>> pool.close()

What it does for every request, in order:
1. wait for a free slot (at most `max_concurrency` requests in flight per endpoint), then route:
   among usable endpoints with a free slot, the one with the fewest in flight, endpoints this
   request already failed on last. Routing when a slot frees (one queue for the pool, not one per
   server) sends waiting work to whichever server is fastest: least outstanding requests. Sidelined
   endpoints are skipped until their cool-down ends ("half-open": the next failure sidelines again);
3. send with httpx; a connection error, a timeout, HTTP 408/429/5xx is a failure of that endpoint:
   the request moves on to another endpoint at once, or, when every endpoint has failed it, waits
   (exponential backoff, or the server's Retry-After) and tries again;
4. any other HTTP error (4xx) is the request's fault, not the server's: it is raised at once,
   naming the URL, and the endpoint stays healthy.
A circuit breaker sidelines an endpoint after `breaker_failures` consecutive failures for
`breaker_cooldown` seconds, so a dead server costs one failed request per cool-down instead of
one per item. Attempts per request: max(max_retries + 1, number of endpoints), so every endpoint
gets a chance before a request fails.

Why by hand: httpx gives the async client and connection pooling, but no load balancing, failover
or circuit breaking across base URLs; vLLM's own router runs as a separate server, and Ray Serve
(Edit-R1's reward server) is a cluster framework. This is the ~150 lines between them.

The pool runs its own event loop on a daemon thread, so the synchronous callers (judges, the
thinker, compare) need no asyncio of their own and it also works inside a running loop (Jupyter).
Results of `map` come back in request order whatever order the servers answer in.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import httpx

from refine.errors import BackendError, ConfigError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def parse_endpoints(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """Base URLs from a URL, a comma-separated list, a list, or a file of URLs (one a line, # comments).

    Trailing slashes are dropped; an empty result or a URL without http(s):// is a `ConfigError`.
    """
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if not text.startswith(("http://", "https://")) and Path(text).is_file():
            lines = Path(text).read_text().splitlines()
            items = [line.split("#", 1)[0].strip() for line in lines]
        else:
            items = [part.strip() for part in text.split(",")]
    else:
        items = [str(part).strip() for part in spec]
    urls = [item.rstrip("/") for item in items if item]
    if not urls:
        raise ConfigError(f"no endpoint URL in {spec!r}; give a URL such as http://127.0.0.1:8000/v1, a list, or a file of URLs")
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    if bad:
        raise ConfigError(f"endpoint {bad[0]!r} is not an http(s) URL (nor a file of URLs); e.g. http://127.0.0.1:8000/v1")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"endpoint URLs repeat in {urls}; list each server once")
    return urls


@dataclass
class Endpoint:
    """One server's routing and health state (touched only from the pool's event loop)."""

    url: str
    in_flight: int = 0
    consecutive_failures: int = 0
    open_until: float = 0.0  # circuit breaker: sidelined while time.monotonic() < open_until
    sent: int = 0
    failures: int = 0
    last_error: str = ""

    def state(self, now: float) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "open" if now < self.open_until else "half-open"


class EndpointPool:
    """Least-outstanding routing, per-endpoint concurrency, failover and a circuit breaker (module docstring).

    Args:
        urls: base URLs including the API prefix (see `parse_endpoints`).
        max_concurrency: requests in flight at once per endpoint.
        timeout: seconds per request (connect and read).
        max_retries: retries after the first attempt; at least one attempt per endpoint is made.
        backoff: base delay in seconds before retrying on an endpoint that already failed the request.
        headers: sent with every request (e.g. the Bearer token).
        breaker_failures: consecutive failures that sideline an endpoint.
        breaker_cooldown: seconds an endpoint stays sidelined before a trial request.
    """

    def __init__(
        self,
        urls: Sequence[str],
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        headers: dict[str, str] | None = None,
        breaker_failures: int = 3,
        breaker_cooldown: float = 30.0,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or breaker_failures < 1 or breaker_cooldown < 0:
            raise ConfigError(
                f"endpoint pool: max_concurrency={max_concurrency} (>= 1), max_retries={max_retries} (>= 0), "
                f"timeout={timeout} (> 0), breaker_failures={breaker_failures} (>= 1), "
                f"breaker_cooldown={breaker_cooldown} (>= 0) out of range"
            )
        self.endpoints = [Endpoint(url) for url in urls]
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.headers = dict(headers or {})
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.requests_sent = 0  # attempts, retries included
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Condition | None = None  # guards in_flight; made on the loop with the client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="refine-endpoint-pool", daemon=True)
        self._thread.start()

    # -- synchronous entry points ----------------------------------------------------------------

    def run(self, coroutine: Awaitable[Any]) -> Any:
        """Run a coroutine on the pool's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def request(self, method: str, path: str, payload: dict | None = None) -> httpx.Response:
        """One request routed through the pool (path is relative to the base URL, e.g. "/models")."""
        return self.run(self.send(method, path, payload))

    def map(self, fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any]) -> tuple[list[Any], BaseException | None]:
        """Run `fn(item)` for every item concurrently; (results in item order, first error or None).

        After the first error the items not yet started are cancelled (a server that is down should
        not be sent the rest of the batch); finished results are kept, unfinished ones are None.
        """
        return self.run(self._map(fn, items))

    def stats(self) -> list[dict[str, Any]]:
        """Per-endpoint counters for logs: url, state, sent, failures, in_flight, last_error."""
        now = time.monotonic()
        return [
            {"url": e.url, "state": e.state(now), "sent": e.sent, "failures": e.failures,
             "in_flight": e.in_flight, "last_error": e.last_error}
            for e in self.endpoints
        ]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._client is not None:
            self.run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # -- on the pool's loop ----------------------------------------------------------------------

    async def _map(self, fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any]) -> tuple[list[Any], BaseException | None]:
        results: list[Any] = [None] * len(items)
        if not items:
            return results, None
        tasks = [asyncio.ensure_future(fn(item)) for item in items]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        error: BaseException | None = None
        for index, task in enumerate(tasks):
            if task.cancelled():
                continue
            if task.exception() is not None:
                error = error or task.exception()
            else:
                results[index] = task.result()
        return results, error

    def _client_on_loop(self) -> httpx.AsyncClient:
        if self._client is None:  # created on the loop's thread, where it will be used
            limit = self.max_concurrency * len(self.endpoints)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), headers=self.headers,
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            )
            self._slots = asyncio.Condition()
        return self._client

    def _usable_urls(self) -> list[str]:
        now = time.monotonic()
        return [e.url for e in self.endpoints if now >= e.open_until] or [min(self.endpoints, key=lambda e: e.open_until).url]

    def _free(self, tried: set[str]) -> Endpoint | None:
        """The endpoint to send to now, or None when every usable one is at its concurrency limit.

        Usable: not sidelined (or, when all are, the one whose cool-down ends first, so a pool of dead
        servers still fails by attempts, not by waiting). Among those with a free slot, endpoints this
        request has not failed on come first, then the fewest in flight.
        """
        now = time.monotonic()
        usable = [e for e in self.endpoints if now >= e.open_until] or [min(self.endpoints, key=lambda e: e.open_until)]
        fresh = [e for e in usable if e.url not in tried]
        free = [e for e in (fresh or usable) if e.in_flight < self.max_concurrency]
        return min(free, key=lambda e: e.in_flight) if free else None

    def _record(self, endpoint: Endpoint, ok: bool, error: str = "") -> None:
        if ok:
            endpoint.consecutive_failures, endpoint.open_until = 0, 0.0
            return
        endpoint.failures += 1
        endpoint.consecutive_failures += 1
        endpoint.last_error = error
        half_open = endpoint.open_until != 0.0
        if half_open or endpoint.consecutive_failures >= self.breaker_failures:
            endpoint.open_until = time.monotonic() + self.breaker_cooldown

    async def send(self, method: str, path: str, payload: dict | None = None) -> httpx.Response:
        """Send one request with routing, failover, retries and the breaker; the 2xx response or a BackendError."""
        client = self._client_on_loop()
        attempts = max(self.max_retries + 1, len(self.endpoints))
        tried: dict[str, int] = {}
        errors: list[str] = []
        retry_after: str | None = None
        for _ in range(attempts):
            if errors and all(url in tried for url in self._usable_urls()):
                # every usable endpoint has failed this request: back off before trying one again
                await asyncio.sleep(self._delay(len(errors), retry_after))
            retry_after = None
            # Route when a slot is free, not when queued: a waiting request then goes to whichever
            # server frees first (least outstanding) and sees breaker changes made meanwhile.
            async with self._slots:
                await self._slots.wait_for(lambda: self._free(set(tried)) is not None)
                endpoint = self._free(set(tried))
                assert endpoint is not None
                endpoint.in_flight += 1
            tried[endpoint.url] = tried.get(endpoint.url, 0) + 1
            url = endpoint.url + path
            endpoint.sent += 1
            self.requests_sent += 1
            try:
                response = await client.request(method, url, json=payload)
            except (httpx.TransportError, OSError) as err:  # connection refused/reset, timeouts
                error = f"{type(err).__name__}: {err}".rstrip(": ")
                self._record(endpoint, False, error)
                errors.append(f"{url}: {error}")
                continue
            finally:
                async with self._slots:
                    endpoint.in_flight -= 1
                    self._slots.notify_all()
            if response.status_code in RETRY_STATUS:
                error = f"HTTP {response.status_code}: {error_text(response)}"
                self._record(endpoint, False, error)
                errors.append(f"{url}: {error}")
                retry_after = response.headers.get("retry-after")
                continue
            self._record(endpoint, True)
            return response
        if len(self.endpoints) == 1:
            url = self.endpoints[0].url + path
            last = errors[-1].split(": ", 1)[1] if errors else "no attempt made"
            raise BackendError(f"{url} is unreachable after {attempts} attempts (last error: {last})")
        failed = "; ".join(dict.fromkeys(errors))  # each distinct failure once, in order
        raise BackendError(f"all {len(self.endpoints)} endpoints failed {path} after {attempts} attempts ({failed})")

    def _delay(self, failures: int, retry_after: str | None) -> float:
        """Seconds to wait before retry number `failures` (1-based): the server's Retry-After, else exponential."""
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return self.backoff * 2 ** max(failures - 1, 0)


def error_text(response: httpx.Response) -> str:
    """The server's own error message from a JSON or text body, at most 300 characters."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:300]
        detail = data.get("detail") or data.get("message") or error
        return str(detail)[:300]
    return str(data)[:300]
