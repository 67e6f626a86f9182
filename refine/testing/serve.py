"""`transformers serve` as a local OpenAI-compatible server for tests: a context manager.

Example:
    >>> from refine.testing.serve import transformers_serve
    >>> from refine.testing.tiny_vlm import tiny_vlm_dir
    >>> from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
    >>> with transformers_serve(tiny_vlm_dir()) as (base_url, model):          # doctest: +SKIP
    ...     backend = OpenAICompatibleVLM(base_url, model=model)
    ...     backend.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=4)

The server is the transformers CLI (`transformers serve <folder>`) in a subprocess on a free
127.0.0.1 port, offline and on one CPU thread; the subprocess applies the torchvision shim first
(`refine._compat`). Starting it dominates: ~10 s on an idle 2-core machine, up to a minute when
busy. In pytest, wrap it in a fixture and `yield` inside the `with` (tests/rewards and
tests/thinker do).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from refine._compat import python_with_torchvision_shim
from refine.errors import BackendError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(
    model_path: str | Path, *, log_path: str | Path | None = None, startup_timeout: float = 180.0
) -> Iterator[tuple[str, str]]:
    """Run `transformers serve model_path`; yield (base_url ending in /v1, model name), stop it on exit.

    The server's output goes to `log_path` (a temporary file when None); when the server exits or
    is not healthy within `startup_timeout` seconds, `BackendError` carries the log's tail.
    """
    import httpx

    port = free_port()
    log = Path(log_path) if log_path is not None else Path(tempfile.mkdtemp(prefix="refine-serve-")) / "server.log"
    code = (
        "import sys\n"
        "from transformers.cli.transformers import main\n"
        f"sys.argv = ['transformers', 'serve', {str(model_path)!r}, '--host', '127.0.0.1', '--port', '{port}', "
        "'--device', 'cpu', '--log-level', 'warning']\n"
        "main()\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(python_with_torchvision_shim(code), stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise BackendError(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BackendError(f"transformers serve did not come up in {startup_timeout:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"{base}/v1", str(model_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
