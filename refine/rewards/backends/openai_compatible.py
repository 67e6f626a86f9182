"""A VLM judge behind an OpenAI-compatible chat-completions server (vLLM, or any hosted endpoint).

Example:
    >>> from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
    >>> vlm = OpenAICompatibleVLM("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B-Instruct",
    ...                           max_concurrency=16, timeout=60, max_retries=4)
    >>> vlm.name
    'openai:http://127.0.0.1:8000/v1'
    >>> scores = vlm.next_token_probs(conversations, ["0", "1", "2", "3", "4", "5"], '"Score": [[')  # doctest: +SKIP

Requests: one chat completion per conversation, images sent inline as PNG data URLs, at most
`max_concurrency` in flight per server. `base_url` may name several servers (a list, a
comma-separated string, or a file of URLs): requests then go through an `EndpointPool`
(least-outstanding routing, failover to another server, a circuit breaker for dead ones; see
refine/rewards/backends/pool.py), and results still come back in request order:

    >>> pool = OpenAICompatibleVLM(["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"], model="judge")
    >>> pool.name, len(pool.pool.endpoints)
    ('openai:http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1', 2)
    >>> pool.close()

Logit modes: the assistant turn is pre-filled with a final assistant message and the vLLM request
extensions ``continue_final_message: true, add_generation_prompt: false``; one token is generated
with ``logprobs: true, top_logprobs: k``. The candidates' probabilities are read from that token's
top-k list (tokens compared after stripping whitespace, so "5" and " 5" both count for "5"),
summed into `mass` and renormalised. A candidate outside the top k gets probability 0: keep k (20,
vLLM's default ``--max-logprobs``) well above the number of candidates. A server that returns no
logprobs, or refuses the request, raises `BackendError` naming the URL and what to change.

Failures: connection errors, timeouts, HTTP 408/429 and 5xx move the request to another server,
or, once every server has failed it, are retried with exponential backoff (``backoff * 2**attempt``
seconds, or the server's Retry-After), `max_retries` times (at least once per server); then a
`PartialBatchError` (a `BackendError`) naming the URL(s) is raised, carrying the results of the
items that did finish (None for the others) in `.results`. Other HTTP errors are not retried.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Awaitable, Callable, Sequence

import httpx
from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.images import load_image
from refine.rewards.backends.base import Conversation, PartialBatchError, ProbResult, ScoredText, expand_prefill, renormalize
from refine.rewards.backends.pool import EndpointPool, error_text, parse_endpoints

LOGPROBS_HINT = (
    "the logit modes need logprobs after an assistant prefill: serve the model with vLLM "
    "(`vllm serve MODEL --max-logprobs 20`, which accepts continue_final_message), or use a sampling mode "
    "(score_sample / score_sample_cot)"
)


class OpenAICompatibleVLM:
    """OpenAI-compatible HTTP backend over one server or a pool of them (see the module docstring).

    Args:
        base_url: server root including the API prefix, e.g. "http://127.0.0.1:8000/v1"; or several
            (a list, "URL1,URL2", or the path of a file with one URL a line) served as one pool.
        model: the served model name (default: the first entry of GET {base_url}/models).
        api_key: sent as a Bearer token when given.
        max_concurrency: requests in flight at once, per server.
        timeout: seconds per request (connect and read).
        max_retries: retries after the first attempt for connection errors, timeouts, 429 and 5xx
            (a pool makes at least one attempt per server).
        backoff: base delay in seconds of the exponential backoff.
        top_logprobs: k of the top-k next-token list read in logit modes.
        image_format: "PNG" (lossless, default) or "JPEG" (smaller requests).
        extra_body: extra JSON fields merged into every request (e.g. {"top_k": 1}).
        prefill_fields: request fields that make the server continue the final assistant message
            (vLLM's by default); set {} for servers that continue a trailing assistant message anyway.
        breaker_failures, breaker_cooldown: a server that failed this many requests in a row is
            sidelined for this many seconds (then tried again with one request).
    """

    def __init__(
        self,
        base_url: str | Sequence[str] = "http://127.0.0.1:8000/v1",
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
        breaker_failures: int = 3,
        breaker_cooldown: float = 30.0,
    ) -> None:
        if image_format.upper() not in ("PNG", "JPEG"):
            raise ConfigError(f"image_format={image_format!r}; use 'PNG' or 'JPEG'")
        urls = parse_endpoints(base_url)
        self.base_url = urls[0]
        self.base_urls = urls
        self.url = f"{self.base_url}/chat/completions" if len(urls) == 1 else ",".join(f"{u}/chat/completions" for u in urls)
        self.name = "openai:" + ",".join(urls)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.top_logprobs = top_logprobs
        self.image_format = image_format.upper()
        self.extra_body = dict(extra_body or {})
        self.prefill_fields = {"continue_final_message": True, "add_generation_prompt": False} if prefill_fields is None else dict(prefill_fields)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.pool = EndpointPool(
            urls, max_concurrency=max_concurrency, timeout=timeout, max_retries=max_retries, backoff=backoff,
            headers=headers, breaker_failures=breaker_failures, breaker_cooldown=breaker_cooldown,
        )
        self._model = model

    @property
    def requests_sent(self) -> int:
        """Attempts sent to any server, retries included (useful in logs and tests)."""
        return self.pool.requests_sent

    @property
    def model(self) -> str:
        """The served model name (asked from the servers once when not given)."""
        if self._model is None:
            data = self._json(self.pool.request("GET", "/models"), "/models")
            models = [m.get("id") for m in data.get("data", []) if m.get("id")]
            if not models:
                raise BackendError(f"{self.base_url}/models lists no model; pass model=... explicitly")
            self._model = models[0]
        return self._model

    def close(self) -> None:
        self.pool.close()

    # -- the two backend calls ---------------------------------------------------------------

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[str]:
        async def one(conversation: Conversation) -> str:
            body = {"messages": to_openai_messages(conversation, self.image_format), "max_tokens": max_new_tokens,
                    "temperature": temperature}
            return _message_text(await self._post(body), self.url)

        return self._map(one, conversations)

    def generate_scored(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[ScoredText]:
        """`generate` with ``logprobs: true``: each generated token's text and probability (`ScoredText`)."""
        async def one(conversation: Conversation) -> ScoredText:
            body = {"messages": to_openai_messages(conversation, self.image_format), "max_tokens": max_new_tokens,
                    "temperature": temperature, "logprobs": True}
            return scored_text_from_response(await self._post(body, logprobs=True), self.url)

        return self._map(one, conversations)

    def next_token_probs(
        self, conversations: Sequence[Conversation], candidates: Sequence[str], prefill: str | Sequence[str] = ""
    ) -> list[ProbResult]:
        if len(candidates) > self.top_logprobs:
            raise ConfigError(f"{len(candidates)} candidates but top_logprobs={self.top_logprobs}; raise top_logprobs")
        prefills = expand_prefill(prefill, len(conversations))

        async def one(item: tuple[Conversation, str]) -> ProbResult:
            conversation, text = item
            messages = to_openai_messages(conversation, self.image_format)
            body: dict[str, Any] = {"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                    "top_logprobs": self.top_logprobs}
            if text:
                messages.append({"role": "assistant", "content": text})
                body.update(self.prefill_fields)
            return probs_from_response(await self._post(body, logprobs=True), candidates, self.url)

        return self._map(one, list(zip(conversations, prefills)))

    # -- plumbing ------------------------------------------------------------------------------

    def _map(self, fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any]) -> list[Any]:
        """Run `fn` over the items through the pool; keep finished results on failure."""
        if not items:
            return []
        self.model  # noqa: B018 - resolve the served model name once, before the requests need it
        results, error = self.pool.map(fn, items)
        if error is None:
            return results
        if not isinstance(error, BackendError):
            raise error  # a bug or a bad request built here, not a server failure
        finished = sum(r is not None for r in results)
        message = f"{error} ({finished}/{len(items)} items of the batch finished; see .results)"
        raise PartialBatchError(message, results) from None

    async def _post(self, body: dict[str, Any], logprobs: bool = False) -> dict[str, Any]:
        payload = {"model": self._model, **body, **self.extra_body}
        response = await self.pool.send("POST", "/chat/completions", payload)
        return self._json(response, "/chat/completions", logprobs=logprobs)

    @staticmethod
    def _json(response: httpx.Response, path: str, logprobs: bool = False) -> dict[str, Any]:
        url = str(response.request.url) if response.request is not None else path
        if response.status_code >= 400:
            message = f"{url} refused the request (HTTP {response.status_code}: {error_text(response)})"
            if logprobs:
                message += f"; {LOGPROBS_HINT}"
            raise BackendError(message)
        try:
            return response.json()
        except ValueError:
            raise BackendError(f"{url} answered with non-JSON content: {response.text[:200]!r}") from None


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


def scored_text_from_response(data: dict[str, Any], url: str = "server") -> ScoredText:
    """A completion's text with its tokens' probabilities (OpenAI chat format, ``logprobs: true``).

    >>> data = {"choices": [{"message": {"content": "make it blue"}, "logprobs": {"content": [
    ...     {"token": "make", "logprob": 0.0}, {"token": " it", "logprob": -0.1}, {"token": " blue", "logprob": -0.9}]}}]}
    >>> reply = scored_text_from_response(data)
    >>> reply.pieces, round(reply.min_prob(), 3)
    (['make', ' it', ' blue'], 0.407)
    """
    text = _message_text(data, url)
    content = ((data["choices"][0].get("logprobs") or {}).get("content")) if text else []
    if content is None:
        raise BackendError(f"{url} returned no logprobs for the completion; serve the model with vLLM, which returns them")
    pieces = [str(entry.get("token", "")) for entry in content]
    probs = [math.exp(float(entry["logprob"])) if entry.get("logprob") is not None else 0.0 for entry in content]
    return ScoredText(text, pieces, probs)


def _message_text(data: dict[str, Any], url: str) -> str:
    try:
        return data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BackendError(f"{url} returned an unexpected completion: {str(data)[:200]}") from None
