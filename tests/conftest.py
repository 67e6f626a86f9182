"""Shared test setup: offline, deterministic, CPU-only, at most 2 threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from refine.shapes.vlm.model import VLMSize, build_shapes_vlm  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_shapes_vlm(tmp_path_factory):
    """A tiny ShapeEdit VLM folder (random weights, the real tokenizer and processor), for the presets that judge with it."""
    return build_shapes_vlm(tmp_path_factory.mktemp("shapes-vlm"), VLMSize.tiny())


def pytest_collection_modifyitems(config, items):
    """Start each xdist worker's share of the collection with its share of the `slow` tests.

    `--dist worksteal` (pyproject addopts) hands each of the workers a contiguous slice of the
    collection and steals only from the end of a queue, never a worker's next tests. The two
    Edit-R1 learning runs (~6.5 min each) sit next to each other in the collection, so they used to
    run one after the other on one worker (a 16-minute suite instead of ~10). Here the `slow`
    tests, longest first by their `minutes` estimate (`@pytest.mark.slow(minutes=6.5)`; 0.5 when
    not given), are dealt round-robin to the slices and put at each slice's front, where worksteal
    cannot take them away from each other. Without xdist the order does not matter.
    """
    # collection runs in the workers, which know the worker count from xdist's workerinput
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers < 2 or len(items) < 2 * workers:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    slow.sort(key=lambda item: item.get_closest_marker("slow").kwargs.get("minutes", 0.5), reverse=True)
    ordered = []
    for worker in range(workers):
        # worksteal's first split: worker w gets len(pending) // (workers - w) of what is left, so
        # the last worker's slice is everything left
        share = (len(items) - len(ordered)) // (workers - worker)
        own_slow = slow[worker::workers]
        take = max(0, share - len(own_slow))
        ordered += own_slow + fast[:take]
        fast = fast[take:]
    items[:] = ordered


@pytest.fixture
def one_torch_thread():
    """torch at 1 thread for one test, restored after it.

    The suite's two learning tests start first, side by side on the two xdist workers: at 2 threads each they
    oversubscribe 2 cores (980 s and 701 s at stop 54); at 1 thread each they take 664 s and 289 s and pass alike.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
