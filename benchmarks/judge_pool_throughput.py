"""Judge-pool throughput against 1, 2 and 4 stub OpenAI-compatible servers with a fixed latency.

    python benchmarks/judge_pool_throughput.py --requests 400 --latency 0.05 --concurrency 4

Each stub answers after `--latency` seconds (sleeping, not computing: a real judge's latency is
spent on its GPU, which 2 CPU cores cannot show), with at most `--concurrency` requests in flight
per server enforced by the client. The ideal is linear: N servers give N times one server's
throughput, capped at concurrency / latency requests per second each. The figure of interest is
the ratio against one server, and against the client's ceiling (the same requests sent to one
server with N times the concurrency: what the client itself can push).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from PIL import Image

from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
from refine.testing.stub_openai import FakeServer, echo_completion

IMAGE = Image.new("RGB", (32, 32), "red")


def run(urls: list[str], requests: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to score `requests` conversations through the pool."""
    vlm = OpenAICompatibleVLM(urls, model="stub", max_concurrency=concurrency)
    chats = [[{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": str(i)}]}]
             for i in range(requests)]
    vlm.generate(chats[:concurrency])  # warm the connections
    start, cpu = time.perf_counter(), time.process_time()
    answers = vlm.generate(chats)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert answers == [f"re:{i}" for i in range(requests)]
    vlm.close()
    return wall, cpu


def serve(latency: float, urls: multiprocessing.Queue) -> None:
    """One stub server in its own process, so servers and client do not share a GIL."""
    server = FakeServer(echo_completion, delay=latency)
    urls.put(server.base_url)
    while True:
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    queue: multiprocessing.Queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=serve, args=(args.latency, queue), daemon=True) for _ in range(4)]
    for process in processes:
        process.start()
    urls = [queue.get(timeout=60) for _ in processes]
    try:
        ideal_one = args.concurrency / args.latency
        print(f"{args.requests} requests, latency {args.latency * 1000:.0f} ms, {args.concurrency} in flight per server "
              f"(one server's ceiling {ideal_one:.0f} req/s)")
        print("| servers | wall s | req/s | vs 1 server | vs ideal | client CPU s |")
        print("|---|---|---|---|---|---|")
        base = None
        for n in (1, 2, 4):
            wall, cpu = run(urls[:n], args.requests, args.concurrency)
            rate = args.requests / wall
            base = base or rate
            print(f"| {n} | {wall:.2f} | {rate:.0f} | {rate / base:.2f}x | {rate / (n * ideal_one):.0%} | {cpu:.2f} |")
        wall, cpu = run(urls[:1], args.requests, args.concurrency * 4)
        print(f"| 1 at {args.concurrency * 4} in flight (client ceiling) | {wall:.2f} | {args.requests / wall:.0f} | "
              f"{args.requests / wall / base:.2f}x | {args.requests / wall / (4 * ideal_one):.0%} | {cpu:.2f} |")
    finally:
        for process in processes:
            process.terminate()


if __name__ == "__main__":
    main()
