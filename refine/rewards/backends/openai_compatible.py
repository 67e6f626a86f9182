"""A VLM judge behind an OpenAI-compatible chat-completions server (vLLM, or any hosted endpoint).

Example:
    >>> from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
    >>> vlm = OpenAICompatibleVLM("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B-Instruct",
    ...                           max_concurrency=16, timeout=60, max_retries=4)
    >>> vlm.name
    'openai:http://127.0.0.1:8000/v1'
    >>> scores = vlm.next_token_probs(conversations, ["0", "1", "2", "3", "4", "5"], '"Score": [[')  # doctest: +SKIP

Requests: one chat completion per conversation, images sent inline as PNG data URLs, at most
`max_concurrency` in flight (a thread pool sharing one `httpx.Client`).

Logit modes: the assistant turn is pre-filled with a final assistant message and the vLLM request
extensions ``continue_final_message: true, add_generation_prompt: false``; one token is generated
with ``logprobs: true, top_logprobs: k``. The candidates' probabilities are read from that token's
top-k list (tokens compared after stripping whitespace, so "5" and " 5" both count for "5"),
summed into `mass` and renormalised. A candidate outside the top k gets probability 0: keep k (20,
vLLM's default ``--max-logprobs``) well above the number of candidates. A server that returns no
logprobs, or refuses the request, raises `BackendError` naming the URL and what to change.

Failures: connection errors, timeouts, HTTP 429 and 5xx are retried `max_retries` times with
exponential backoff (``backoff * 2**attempt`` seconds, or the server's Retry-After); then a
`PartialBatchError` (a `BackendError`) naming the URL is raised, carrying the results of the items
that did finish (None for the others) in `.results`. Other HTTP errors are not retried.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Sequence

from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.images import load_image
from refine.rewards.backends.base import Conversation, PartialBatchError, ProbResult, expand_prefill, renormalize

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
LOGPROBS_HINT = (
    "the logit modes need logprobs after an assistant prefill: serve the model with vLLM "
    "(`vllm serve MODEL --max-logprobs 20`, which accepts continue_final_message), or use a sampling mode "
    "(score_sample / score_sample_cot)"
)


class OpenAICompatibleVLM:
    """OpenAI-compatible HTTP backend (see the module docstring).

    Args:
        base_url: server root including the API prefix, e.g. "http://127.0.0.1:8000/v1".
        model: the served model name (default: the first entry of GET {base_url}/models).
        api_key: sent as a Bearer token when given.
        max_concurrency: requests in flight at once.
        timeout: seconds per request (connect and read).
        max_retries: retries after the first attempt for connection errors, timeouts, 429 and 5xx.
        backoff: base delay in seconds of the exponential backoff.
        top_logprobs: k of the top-k next-token list read in logit modes.
        image_format: "PNG" (lossless, default) or "JPEG" (smaller requests).
        extra_body: extra JSON fields merged into every request (e.g. {"top_k": 1}).
        prefill_fields: request fields that make the server continue the final assistant message
            (vLLM's by default); set {} for servers that continue a trailing assistant message anyway.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        top_logprobs: int = 20,
        image_format: str = "PNG",
        extra_body: dict[str, Any] | None = None,
        prefill_fields: dict[str, Any] | None = None,
    ) -> None:
        import httpx

        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError(
                f"OpenAICompatibleVLM: max_concurrency={max_concurrency} (>= 1), max_retries={max_retries} (>= 0), "
                f"timeout={timeout} (> 0) out of range"
            )
        if image_format.upper() not in ("PNG", "JPEG"):
            raise ConfigError(f"image_format={image_format!r}; use 'PNG' or 'JPEG'")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.name = f"openai:{self.base_url}"
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.top_logprobs = top_logprobs
        self.image_format = image_format.upper()
        self.extra_body = dict(extra_body or {})
        self.prefill_fields = {"continue_final_message": True, "add_generation_prompt": False} if prefill_fields is None else dict(prefill_fields)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._model = model
        self._lock = threading.Lock()
        self.requests_sent = 0  # counts attempts, retries included (useful in logs and tests)

    @property
    def model(self) -> str:
        """The served model name (asked from the server once when not given)."""
        if self._model is None:
            data = self._send("GET", f"{self.base_url}/models", None)
            models = [m.get("id") for m in data.get("data", []) if m.get("id")]
            if not models:
                raise BackendError(f"{self.base_url}/models lists no model; pass model=... explicitly")
            self._model = models[0]
        return self._model

    def close(self) -> None:
        self._client.close()

    # -- the two backend calls ---------------------------------------------------------------

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[str]:
        def one(conversation: Conversation) -> str:
            body = {"messages": to_openai_messages(conversation, self.image_format), "max_tokens": max_new_tokens,
                    "temperature": temperature}
            data = self._post(body)
            return _message_text(data, self.url)

        return self._map(one, conversations)

    def next_token_probs(
        self, conversations: Sequence[Conversation], candidates: Sequence[str], prefill: str | Sequence[str] = ""
    ) -> list[ProbResult]:
        if len(candidates) > self.top_logprobs:
            raise ConfigError(f"{len(candidates)} candidates but top_logprobs={self.top_logprobs}; raise top_logprobs")
        prefills = expand_prefill(prefill, len(conversations))

        def one(item: tuple[Conversation, str]) -> ProbResult:
            conversation, text = item
            messages = to_openai_messages(conversation, self.image_format)
            body: dict[str, Any] = {"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                    "top_logprobs": self.top_logprobs}
            if text:
                messages.append({"role": "assistant", "content": text})
                body.update(self.prefill_fields)
            return probs_from_response(self._post(body, logprobs=True), candidates, self.url)

        return self._map(one, list(zip(conversations, prefills)))

    # -- plumbing ------------------------------------------------------------------------------

    def _map(self, fn: Callable[[Any], Any], conversations: Sequence[Any]) -> list[Any]:
        """Run `fn` over the conversations with bounded concurrency; keep finished results on failure."""
        results: list[Any] = [None] * len(conversations)
        if not conversations:
            return results
        self.model  # noqa: B018 - resolve the served model name once, before the worker threads need it
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            futures = {pool.submit(fn, c): i for i, c in enumerate(conversations)}
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            error: BaseException | None = None
            for future in pending:
                future.cancel()  # queued items do not start once the server is known to be down
            for future in list(done) + list(pending):
                if future.cancelled():
                    continue
                try:
                    results[futures[future]] = future.result()
                except BaseException as err:  # noqa: BLE001 - re-raised below with the partial results
                    error = error or err
        if error is None:
            return results
        if not isinstance(error, BackendError):
            raise error  # a bug or a bad request built here, not a server failure
        finished = sum(r is not None for r in results)
        message = f"{error} ({finished}/{len(conversations)} items of the batch finished; see .results)"
        raise PartialBatchError(message, results) from None

    def _post(self, body: dict[str, Any], logprobs: bool = False) -> dict[str, Any]:
        payload = {"model": self.model, **body, **self.extra_body}
        return self._send("POST", self.url, payload, logprobs=logprobs)

    def _send(self, method: str, url: str, payload: dict | None, logprobs: bool = False) -> dict[str, Any]:
        import httpx

        last, retry_after = "no attempt made", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
                retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                response = self._client.request(method, url, json=payload)
            except (httpx.TransportError, OSError) as err:  # connection refused/reset, timeouts
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {_error_text(response)}"
                retry_after = response.headers.get("retry-after")
                continue
            if response.status_code >= 400:
                message = f"{url} refused the request (HTTP {response.status_code}: {_error_text(response)})"
                if logprobs:
                    message += f"; {LOGPROBS_HINT}"
                raise BackendError(message)
            try:
                return response.json()
            except ValueError:
                raise BackendError(f"{url} answered with non-JSON content: {response.text[:200]!r}") from None
        raise BackendError(f"{url} is unreachable after {self.max_retries + 1} attempts (last error: {last})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before retry `attempt` (1-based): the server's Retry-After, else exponential."""
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return self.backoff * 2 ** (attempt - 1)


def to_openai_messages(conversation: Conversation, image_format: str = "PNG") -> list[dict[str, Any]]:
    """transformers-style chat (PIL images in content parts) -> OpenAI messages with data URLs.

    >>> msgs = to_openai_messages([{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (2, 2))},
    ...                                                         {"type": "text", "text": "hi"}]}])
    >>> msgs[0]["content"][0]["image_url"]["url"][:22], msgs[0]["content"][1]
    ('data:image/png;base64,', {'type': 'text', 'text': 'hi'})
    """
    messages = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"], image_format)}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ConfigError(f"message part of type {part.get('type')!r} cannot be sent; use 'image' or 'text'")
        messages.append({"role": message["role"], "content": parts})
    return messages


def image_data_url(image: Image.Image, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    load_image(image).save(buffer, format=image_format)
    mime = "png" if image_format == "PNG" else "jpeg"
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def probs_from_response(data: dict[str, Any], candidates: Sequence[str], url: str = "server") -> ProbResult:
    """Read the first generated token's top logprobs (vLLM / OpenAI chat format) into a `ProbResult`.

    >>> data = {"choices": [{"logprobs": {"content": [{"token": "4", "logprob": -0.5, "top_logprobs": [
    ...     {"token": "4", "logprob": -0.5}, {"token": "3", "logprob": -1.5}, {"token": "I", "logprob": -2.0}]}]}}]}
    >>> result = probs_from_response(data, ["3", "4", "5"])
    >>> {k: round(v, 3) for k, v in result.probs.items()}, round(result.mass, 3)
    ({'3': 0.269, '4': 0.731, '5': 0.0}, 0.83)
    """
    import math

    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{url} returned no choices: {str(data)[:200]}") from None
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        raise BackendError(f"{url} returned no logprobs; {LOGPROBS_HINT}")
    top = content[0].get("top_logprobs") or []
    if not top:
        raise BackendError(f"{url} returned logprobs without top_logprobs; {LOGPROBS_HINT}")
    raw = {c: 0.0 for c in candidates}
    for entry in top:
        token = str(entry.get("token", "")).strip()
        if token in raw and entry.get("logprob") is not None:
            raw[token] += math.exp(float(entry["logprob"]))
    return renormalize(raw)


def _message_text(data: dict[str, Any], url: str) -> str:
    try:
        return data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BackendError(f"{url} returned an unexpected completion: {str(data)[:200]}") from None


def _error_text(response) -> str:
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
