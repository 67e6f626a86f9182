"""The judge pool: several loopback OpenAI-compatible servers behind one `OpenAICompatibleVLM`."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest
from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
from refine.rewards.backends.pool import parse_endpoints
from refine.testing.stub_openai import echo_completion as echo

IMAGE = Image.new("RGB", (8, 8), "red")


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": text}]}]


def closed_port_url() -> str:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_a_server_killed_mid_run_loses_nothing_and_order_is_kept(fake_server):
    killed = threading.Event()
    servers = []

    def respond_then_die(body):
        if len(servers[0].bodies) >= 5 and not killed.is_set():
            killed.set()
            threading.Thread(target=servers[0].close).start()  # close from outside the handler thread
        return echo(body)

    servers.append(fake_server(respond_then_die, delay=0.01))
    servers += [fake_server(echo, delay=0.01) for _ in range(2)]
    vlm = OpenAICompatibleVLM([s.base_url for s in servers], model="m", max_concurrency=2, backoff=0.01,
                              breaker_failures=1, breaker_cooldown=60)
    texts = [f"item {i}" for i in range(60)]
    assert vlm.generate([chat(t) for t in texts]) == [f"re:{t}" for t in texts]  # all, in request order
    assert killed.is_set()
    served = [len(s.bodies) for s in servers]
    assert sum(served) >= 60 and served[0] < 20  # the dead server stopped getting work
    assert all(n > 0 for n in served[1:])
    stats = {s["url"]: s for s in vlm.pool.stats()}
    assert stats[servers[0].base_url]["state"] == "open" and stats[servers[0].base_url]["failures"] >= 1
    vlm.close()


def test_results_come_back_in_request_order_when_servers_answer_out_of_order(fake_server):
    rng = random.Random(0)

    def jittery(body):
        time.sleep(rng.uniform(0.0, 0.03))
        return echo(body)

    servers = [fake_server(jittery) for _ in range(3)]
    vlm = OpenAICompatibleVLM([s.base_url for s in servers], model="m", max_concurrency=4)
    texts = [str(i) for i in range(40)]
    assert vlm.generate([chat(t) for t in texts]) == [f"re:{t}" for t in texts]
    vlm.close()


def test_least_outstanding_routing_sends_more_to_the_faster_server(fake_server):
    slow = fake_server(echo, delay=0.15)
    fast = fake_server(echo, delay=0.0)
    vlm = OpenAICompatibleVLM([slow.base_url, fast.base_url], model="m", max_concurrency=2)
    vlm.generate([chat(str(i)) for i in range(30)])
    # Round-robin would split 15/15; the slow server holds its requests longer, so it is picked less.
    assert len(fast.bodies) >= 2 * len(slow.bodies)
    vlm.close()


def test_concurrency_is_bounded_per_endpoint(fake_server):
    servers = [fake_server(echo, delay=0.05) for _ in range(2)]
    vlm = OpenAICompatibleVLM([s.base_url for s in servers], model="m", max_concurrency=3)
    vlm.generate([chat(str(i)) for i in range(24)])
    assert all(1 < s.max_in_flight <= 3 for s in servers)
    vlm.close()


def test_circuit_breaker_sidelines_a_dead_endpoint(fake_server):
    live = fake_server(echo)
    dead = closed_port_url()
    vlm = OpenAICompatibleVLM([dead, live.base_url], model="m", max_concurrency=1, breaker_failures=2,
                              breaker_cooldown=60, backoff=0.0)
    texts = [str(i) for i in range(20)]
    assert vlm.generate([chat(t) for t in texts]) == [f"re:{t}" for t in texts]
    dead_stats = next(s for s in vlm.pool.stats() if s["url"] == dead)
    # Without the breaker the dead server would be tried about once per item (least outstanding
    # keeps picking the idle dead endpoint); with it, twice, then never during the cool-down.
    assert dead_stats["sent"] == 2 and dead_stats["state"] == "open"
    assert len(live.bodies) == 20
    vlm.close()


def test_every_endpoint_down_names_them_all():
    urls = [closed_port_url(), closed_port_url()]
    vlm = OpenAICompatibleVLM(urls, model="m", max_retries=1, backoff=0.0, timeout=2)
    with pytest.raises(BackendError) as info:
        vlm.generate([chat("x")])
    assert all(url in str(info.value) for url in urls)
    assert vlm.requests_sent == 2  # one attempt per endpoint (max_retries + 1 = 2 = the number of endpoints)
    vlm.close()


def test_a_bad_request_is_not_failed_over(fake_server):
    servers = [fake_server(lambda body: (400, {"error": {"message": "bad"}})) for _ in range(2)]
    vlm = OpenAICompatibleVLM([s.base_url for s in servers], model="m")
    with pytest.raises(BackendError, match="HTTP 400"):
        vlm.generate([chat("x")])
    assert sum(len(s.bodies) for s in servers) == 1  # the request's fault, not the server's
    vlm.close()


def test_endpoints_from_a_list_a_string_or_a_file(tmp_path):
    listing = tmp_path / "judges.txt"
    listing.write_text("# the judge servers\nhttp://a:8000/v1\n\nhttp://b:8000/v1/  # second node\n")
    assert parse_endpoints(listing) == ["http://a:8000/v1", "http://b:8000/v1"]
    assert parse_endpoints(str(listing)) == parse_endpoints("http://a:8000/v1,http://b:8000/v1")
    with pytest.raises(ConfigError, match="not an http"):
        parse_endpoints(["a:8000/v1"])
    with pytest.raises(ConfigError, match="repeat"):
        parse_endpoints(["http://a/v1", "http://a/v1/"])
    with pytest.raises(ConfigError, match="no endpoint"):
        parse_endpoints(" , ")
