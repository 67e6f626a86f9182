"""`run_compare`: every entry on every case with fixed seeds, batched, cached, resumable, reported.

Example (a full run on the bundled ShapeEdit editor; `examples/compare_strategies.py` has more):
    >>> from refine.compare import run_compare
    >>> run = run_compare("compare/shapes", ["limit=8", "out_dir=/tmp/refine-compare"])  # doctest: +SKIP
    >>> run.files["html"]                                                                 # doctest: +SKIP
    PosixPath('/tmp/refine-compare/report.html')

The loop, per entry (entries in config order):
1. list the (case, seed) pairs whose outputs are not cached under the entry's fingerprint;
2. if any, build the entry (editor + composed refiners) and edit them `batch_size` at a time,
   turn by turn (turn k+1 edits the output of turn k), saving each finished case atomically;
3. free the entry, then score every (case, seed) that has no score under the benchmark's judge
   key, again in batches, saving each score.
Everything that can be checked without compute is checked first (`prepare`): the config, the
benchmark (its folder layout, its judge spec), every entry's kinds, parameters and artifacts.
An interruption loses at most the batch in flight: a rerun skips what is on disk. A backend that
fails (a served thinker or judge down) fails its entry, not the run: the other entries still run
(none after a judge failure, which every entry needs), the report of every entry that finished is
written, and then a `BackendError` naming the entry and the server ends the run. The report
(`refine.compare.report`) is written from the cache, so it is the same whether the results were
computed now or earlier.

Several processes (`accelerate launch -m refine compare CONFIG`, or `torchrun ... -m refine
compare CONFIG`): every process plans the same (case, seed) list, the batches of `batch_size` are
dealt round-robin (process r edits batches r, r + N, ...), each process saves its cases to the
shared cache as they finish, scoring is dealt the same way, and the main process writes the report
from the cache. Whole batches are dealt, so every output comes from the very batch a single
process would have edited it in: the report equals the one-process report exactly. A process that
dies loses only its in-flight batch (torchrun then stops the others); rerunning the same command,
with any number of processes, computes just what is missing. The output and cache folders must be
on a filesystem every process sees.
"""

from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.console import Console

from refine.compare.benchmarks.base import Benchmark, Case, select_cases, stable_hash
from refine.compare.config import CompareConfig
from refine.compare.entries import Entry, Skipped, plan_entries
from refine.compare.stats import SummaryRow
from refine.compare.store import EditRecord, Store, TurnRecord
from refine.config import load_config
from refine.errors import BackendError, ConfigError, InputError
from refine.paths import check_output_dir
from refine.registry import registry

DEFAULT_PRESET = "compare/shapes"


@dataclass
class CaseRow:
    """One (entry, case, seed) of the results, as written to `cases.jsonl`."""

    entry: str
    case_id: str
    category: str
    seed: int
    instruction: str
    instruction_used: str
    turns: list[dict[str, Any]]
    scores: dict[str, float]
    seconds: float
    image: Path  # final output (cache path; the report copies it next to the report)
    turn_images: list[Path] = field(default_factory=list)
    turn_scores: list[dict[str, float]] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "case_id": self.case_id,
            "category": self.category,
            "seed": self.seed,
            "instruction": self.instruction,
            "instruction_used": self.instruction_used,
            "turns": self.turns,
            "scores": self.scores,
            "turn_scores": self.turn_scores,
            "seconds": self.seconds,
            "details": self.details,
        }


@dataclass
class Plan:
    """A checked comparison, ready to run: nothing heavy is loaded yet."""

    config: CompareConfig
    benchmark: Benchmark
    cases: list[Case]
    entries: list[Entry]
    skipped: list[Skipped]
    store: Store


@dataclass
class CompareRun:
    """What `run_compare` returns: the rows, the summary, where the report is, what was computed."""

    config: CompareConfig
    benchmark: Benchmark
    cases: list[Case]
    rows: list[CaseRow]
    summary: list[SummaryRow]
    files: dict[str, Path]
    skipped: list[Skipped]
    edited: dict[str, int]  # entry -> (case, seed) pairs edited in this run (the rest came from the cache)
    scored: dict[str, int]
    seconds: float

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


class EntryFailed(Exception):
    """A backend failed while one entry ran; `judge` tells whether it was the benchmark's judge."""

    def __init__(self, cause: BackendError, judge: bool) -> None:
        super().__init__(str(cause))
        self.cause = f"while {'judging' if judge else 'editing'}: {cause}"
        self.judge = judge


def load_compare_config(
    config: CompareConfig | dict | str | Path | None = None, overrides: Iterable[str] = ()
) -> CompareConfig:
    """A `CompareConfig` from an object, a dict, a YAML path or a preset name (None: the default)."""
    overrides = list(overrides)
    if isinstance(config, CompareConfig):
        if not overrides:
            return config
        config = config.model_dump()
    if isinstance(config, dict):
        return load_config(CompareConfig, data=config, overrides=overrides)
    from refine.presets import find_preset

    return load_config(CompareConfig, find_preset(str(config or DEFAULT_PRESET)), overrides)


def prepare(config: CompareConfig, console: Console | None = None) -> Plan:
    """Check everything that can fail before compute; print a note for each skipped entry."""
    console = console or Console()
    check_output_dir(config.out_dir, "out_dir")  # the report is written last: fail now, not after the run
    if config.cache_dir:
        check_output_dir(config.cache_dir, "cache_dir")
    benchmark = build_benchmark(config.benchmark)
    cases = select_cases(benchmark.cases(), config.limit)
    if not cases:
        raise InputError(f"benchmark {benchmark.name!r} has no cases; check its folder or split")
    entries, skipped = plan_entries(config)
    for item in skipped:
        console.print(f"[yellow]note:[/yellow] skipping entry {item.name!r}: {item.reason}", highlight=False, soft_wrap=True)
    if not entries:
        raise ConfigError("every entry was skipped (missing artifacts); train or point to one, or add an entry without")
    cache = Path(config.cache_dir) if config.cache_dir else Path(config.out_dir) / "cache"
    return Plan(config, benchmark, cases, entries, skipped, Store(cache / safe_key(benchmark.key)))


def build_benchmark(spec: dict[str, Any]) -> Benchmark:
    try:
        benchmark = registry.build("benchmark", spec)
    except ConfigError as err:
        raise ConfigError(f"benchmark: {err}") from None
    if not isinstance(benchmark, Benchmark):
        raise ConfigError(f"benchmark kind {spec['kind']!r} built a {type(benchmark).__name__}, which is not a Benchmark")
    return benchmark


@dataclass
class Ranks:
    """This process's place among the compare processes (one process: rank 0 of 1, no collectives)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def first_error(self, error: str | None) -> str | None:
        """The first process's error message, if any process has one (every process learns it)."""
        if self.world == 1:
            return error
        import torch.distributed as dist

        errors: list[str | None] = [None] * self.world
        dist.all_gather_object(errors, error)
        return next((e for e in errors if e is not None), None)


def current_ranks() -> Ranks:
    """The `Ranks` of this process: from torchrun's / accelerate's environment, one process without it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState  # joins the process group (gloo on CPU, NCCL on GPUs)

    # accelerate treats a torchrun launch without an accelerator as one process unless told `cpu`
    # (each process then ran every case and all wrote the report at once); the trainers say the same
    state = PartialState(cpu=not torch.cuda.is_available())
    return Ranks(state.process_index, state.num_processes)


def run_compare(
    config: CompareConfig | dict | str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    console: Console | None = None,
    write_report: bool = True,
) -> CompareRun:
    """Run (or resume) a comparison and write its report; see the module docstring for the loop."""
    start = time.perf_counter()
    console = console or Console()
    cfg = load_compare_config(config, overrides)
    ranks = current_ranks()
    plan = prepare(cfg, console)
    edited: dict[str, int] = {}
    scored: dict[str, int] = {}
    failed: list[Skipped] = []  # entries a backend failed (a served thinker or judge down): reported apart
    with _threads(cfg.threads), _progress(console, cfg.progress) as progress:
        for entry in plan.entries:
            try:
                edited[entry.name], scored[entry.name] = _run_entry(plan, entry, progress, ranks)
            except EntryFailed as err:
                failed.append(Skipped(entry.name, f"failed {err.cause}"))
                console.print(f"[red]entry {entry.name!r} failed[/red] {err.cause}", highlight=False, soft_wrap=True)
                if err.judge:
                    break  # every entry needs the judge: the rest would fail the same way
    finished = [entry for entry in plan.entries if entry.name in edited]
    if not finished:
        raise BackendError(f"entry {failed[0].name!r} {failed[0].reason}")
    rows = collect_rows(plan, finished)
    from refine.compare.report import summarize_rows, write_report as write

    summary = summarize_rows(plan.benchmark, rows, cfg.bootstrap, oracles=[e.name for e in plan.entries if e.oracle])
    run = CompareRun(
        cfg, plan.benchmark, plan.cases, rows, summary, {}, plan.skipped + failed, edited, scored, time.perf_counter() - start
    )
    if write_report and ranks.main:
        run.files = write(run, console=console)
    if failed:  # after the report: what finished is written and cached, the error still ends the run
        names = ", ".join(repr(item.name) for item in failed)
        where = f"; the report of the {len(finished)} entries that finished is in {cfg.out_dir}" if write_report else ""
        raise BackendError(
            f"entry {failed[0].name!r} {failed[0].reason}{where}; rerun the same command once the server answers "
            f"(finished cases are cached){'' if len(failed) == 1 else f' (failed: {names})'}"
        )
    return run


def _run_entry(plan: Plan, entry: Entry, progress, ranks: Ranks = Ranks()) -> tuple[int, int]:
    """Edit, then score, what the cache lacks for `entry`; this process takes its share of the batches."""
    cfg, store, bench = plan.config, plan.store, plan.benchmark
    items = [(case, seed) for case in plan.cases for seed in cfg.seeds]
    todo = [(c, s) for c, s in items if store.load_edit(entry.key, c.id, s) is None]
    ranks.barrier()  # every process has listed the same `todo` before any of them writes
    mine = list(_chunks(todo, cfg.batch_size))[ranks.rank :: ranks.world]
    task = progress.add_task(f"{entry.name} [edit]", total=len(items), completed=len(items) - len(todo))
    error = None
    if mine:
        try:
            editor = entry.build()
            for batch in mine:
                _edit_batch(plan, entry, editor, batch)
                progress.advance(task, len(batch))
        except BackendError as err:  # finished batches are cached; the entry is reported as failed
            error = str(err)
        finally:
            editor = None
            gc.collect()  # free the entry's weights before the judge (or the next entry) loads its own
    error = ranks.first_error(error)  # also the barrier after editing: every output is in the cache
    if error is not None:
        raise EntryFailed(BackendError(error), judge=False)
    judge_key = safe_key(bench.judge_key)
    unscored = [(c, s) for c, s in items if store.load_score(entry.key, c.id, s, judge_key) is None]
    ranks.barrier()
    progress.reset(task, total=len(items), completed=len(items) - len(unscored), description=f"{entry.name} [judge]")
    for batch in list(_chunks(unscored, cfg.batch_size))[ranks.rank :: ranks.world]:
        records = [store.load_edit(entry.key, c.id, s) for c, s in batch]
        try:
            scores = bench.score([(c, store.load_results(entry.key, r)) for (c, _), r in zip(batch, records)])
        except BackendError as err:
            error = str(err)
            break
        if len(scores) != len(batch):
            raise BackendError(f"benchmark {bench.name!r} returned {len(scores)} scores for {len(batch)} cases")
        for (case, seed), score in zip(batch, scores):
            store.save_score(entry.key, case.id, seed, judge_key, score)
        progress.advance(task, len(batch))
    error = ranks.first_error(error)  # every score is in the cache
    if error is not None:
        raise EntryFailed(BackendError(error), judge=True)
    progress.update(task, description=f"{entry.name} [done]")
    return len(todo), len(unscored)


def _edit_batch(plan: Plan, entry: Entry, editor, batch: Sequence[tuple[Case, int]]) -> None:
    """Edit a batch of cases turn by turn; each case is saved as soon as its last turn is done."""
    images = [case.source_image() for case, _ in batch]
    turns: list[list[TurnRecord]] = [[] for _ in batch]
    outputs: list[list] = [[] for _ in batch]
    for turn in range(max(case.turns for case, _ in batch)):
        active = [i for i, (case, _) in enumerate(batch) if case.turns > turn]
        requests = [plan.benchmark.request(batch[i][0], turn, images[i], batch[i][1]) for i in active]
        started = time.perf_counter()
        results = editor.edit(requests)
        seconds = (time.perf_counter() - started) / len(requests)  # batched: each request gets its share
        if len(results) != len(requests):
            raise BackendError(f"entry {entry.name!r}: the editor returned {len(results)} results for {len(requests)} requests")
        for i, request, result in zip(active, requests, results):
            images[i] = result.image
            outputs[i].append(result.image)
            turns[i].append(
                TurnRecord(request.instruction, result.instruction, seconds, [step.to_json() for step in result.steps])
            )
    for (case, seed), case_turns, case_images in zip(batch, turns, outputs):
        plan.store.save_edit(entry.key, EditRecord(case.id, seed, case_turns), case_images)


def collect_rows(plan: Plan, entries: Sequence[Entry] | None = None) -> list[CaseRow]:
    """Every (entry, case, seed) of the plan (or of `entries` only), read back from the cache."""
    rows = []
    judge_key = safe_key(plan.benchmark.judge_key)
    for entry in plan.entries if entries is None else entries:
        for case in plan.cases:
            for seed in plan.config.seeds:
                record = plan.store.load_edit(entry.key, case.id, seed)
                score = plan.store.load_score(entry.key, case.id, seed, judge_key)
                if record is None or score is None:
                    raise InputError(f"cache entry missing for {entry.name!r} / {case.id!r} / seed {seed}; rerun to compute it")
                paths = plan.store.image_paths(entry.key, record)
                turns = [
                    {
                        "instruction": t.instruction,
                        "instruction_used": t.instruction_used,
                        "seconds": t.seconds,
                        "steps": t.steps,
                        **({"scores": score.turn_scores[k]} if score.turn_scores else {}),
                    }
                    for k, t in enumerate(record.turns)
                ]
                rows.append(
                    CaseRow(
                        entry.name, case.id, case.category, seed, case.instruction,
                        " | ".join(t.instruction_used for t in record.turns), turns, score.scores,
                        record.seconds, paths[-1], paths, score.turn_scores, score.details,
                    )
                )
    return rows


def safe_key(key: str) -> str:
    """Benchmark / judge keys as folder names: readable prefix + hash when they contain anything odd."""
    from refine.compare.store import safe_name

    return safe_name(key) if len(key) <= 64 else safe_name(key[:40]) + "-" + stable_hash(key, 12)


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _threads(count: int | None):
    """torch's intra-op thread count set to `count` for the block, then restored."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass

    def reset(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass


def _progress(console: Console, enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
