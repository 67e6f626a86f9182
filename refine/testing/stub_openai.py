"""A stub OpenAI-compatible server on loopback: tests and the judge-pool benchmark talk to it.

Example:
    >>> from refine.testing.stub_openai import FakeServer, echo_completion
    >>> server = FakeServer(echo_completion, delay=0.0)
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.close()

`transformers serve` refuses logprob requests, so the logit modes are tested against this stub,
answering in vLLM's documented response format; the sampling modes also run against real
`transformers serve` processes (refine/testing/serve.py).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections beyond it waits for
    # the client's SYN retry (about a second), which would cap every throughput figure.
    request_queue_size = 128
    daemon_threads = True


def echo_completion(body: dict) -> tuple[int, dict]:
    """A chat completion whose content is "re:" + the last text of the request (matches answers to requests)."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[-1]["text"]
    return 200, {"object": "chat.completion", "model": body.get("model", "m"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": f"re:{text}"}, "finish_reason": "stop"}]}


class FakeServer:
    """An OpenAI-style HTTP server on 127.0.0.1 answering with `respond(body) -> (status, json)`.

    Records every request body and the largest number of requests in flight at once.
    """

    def __init__(self, respond: Callable[[dict], tuple[int, dict]], delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.models = ["served-model"]
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    status, data = server.respond(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802 - GET /v1/models
                payload = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
