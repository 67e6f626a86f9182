"""`refine compare export RUN --layout NAME`: a run's outputs where each benchmark's official evaluator reads them.

Example (a finished ImgEdit comparison, exported flat as ImgEdit's basic_bench.py reads it):
    >>> from refine.compare.export import export_run
    >>> result = export_run("runs/imgedit", "imgedit")                            # doctest: +SKIP
    >>> sorted(p.name for p in (result.out / "base").iterdir())[:2]               # doctest: +SKIP
    ['1068.png', '1082.png']

A run folder (`out_dir` of `refine compare`) holds `config.yaml`, `cases.jsonl` and the outputs
under `images/`; export reads the benchmark again from the config (for each case's official key,
category and source) and writes, under `out` (default `<RUN>/export-<layout>`), one folder per
entry (per entry and seed, `<entry>-s<seed>`, when the run has several seeds), so the authors'
scripts run unchanged with that folder as the model's:

| layout    | outputs (per entry folder MODEL)                                  | sources copied next to them                     |
|-----------|--------------------------------------------------------------------|-------------------------------------------------|
| `gedit`   | `MODEL/fullset/{task_type}/{en,cn}/{key}.png`                      | `{key}_SRCIMG.png` beside each (`input_image`)  |
| `imgedit` | `MODEL/{key}.png`                                                  | `basic_edit.json` + `original_images/{id}`      |
| `edival`  | `MODEL/multipass/{idx}_input_raw_turn_{t}.png`, 512x512 (LANCZOS)  | `MODEL/multipass/{idx}_input_raw.png` (512) + the CSV |
| `kris`    | `results/MODEL/{category}/{id}.jpg`                                | `KRIS_Bench/{category}/annotation.json` + images |
| `rise`    | `outputs/MODEL/images/{category}/{index}.png`                      | `data/data_total.json` + images                 |

The naming follows the evaluators' reading code: GEdit-Bench `test_gedit_score.py`
(`--save_path OUT --model_name MODEL`), ImgEdit `basic_bench.py` (`--result_img_folder OUT/MODEL
--edit_json OUT/basic_edit.json --origin_img_root OUT/original_images`), EdiVal `eval.py`
(`--generation_folder OUT/MODEL`; it reads `./oai_instruction_generation_output.csv`), KRIS-Bench
`metrics_*.py` (run in OUT: `KRIS_Bench/` and `results/`), RISEBench `gpt_eval.py` (`--data
OUT/data/data_total.json --output OUT/outputs/MODEL`). `EXPORT.md` in `out` lists these commands.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from refine.compare.benchmarks.base import Benchmark, Case
from refine.compare.runner import build_benchmark, load_compare_config
from refine.compare.store import safe_name
from refine.errors import ConfigError, InputError
from refine.images import load_image

EDIVAL_SIZE = 512  # EdiVal's generate.py resizes every turn to 512x512 (LANCZOS) before its evaluator reads it


@dataclass
class ExportResult:
    """What `export_run` wrote: the folder, the model folders (entry[-seed] -> path) and the file count."""

    out: Path
    models: dict[str, Path] = field(default_factory=dict)
    files: int = 0


def export_run(run_dir: str | Path, layout: str, out: str | Path | None = None) -> ExportResult:
    """Write the outputs of the comparison in `run_dir` in `layout` (see the module docstring) under `out`."""
    run_dir = Path(run_dir)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown export layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    for name in ("config.yaml", "cases.jsonl"):
        if not (run_dir / name).is_file():
            raise InputError(f"{str(run_dir)!r} is not a comparison results folder (no {name}); pass the out_dir of `refine compare`")
    benchmark = build_benchmark(load_compare_config(str(run_dir / "config.yaml")).benchmark)
    if benchmark.name != LAYOUT_BENCHMARK[layout]:
        raise ConfigError(
            f"layout {layout!r} is for the {LAYOUT_BENCHMARK[layout]!r} benchmark, but {str(run_dir)!r} ran {benchmark.name!r}"
        )
    rows = [json.loads(line) for line in (run_dir / "cases.jsonl").read_text().splitlines() if line.strip()]
    cases = {case.id: case for case in benchmark.cases()}
    lost = sorted({row["case_id"] for row in rows} - set(cases))
    if lost:
        raise InputError(f"the benchmark data no longer holds case(s) {', '.join(lost[:5])} of {str(run_dir)!r}; export needs the data the run used")
    out = Path(out) if out is not None else run_dir / f"export-{layout}"
    seeds = sorted({row["seed"] for row in rows})
    result = ExportResult(out)
    writer = LAYOUTS[layout]
    for row in rows:
        model = safe_name(row["entry"]) + (f"-s{row['seed']}" if len(seeds) > 1 else "")
        images = [run_dir / p for p in row["turn_images"]]
        result.files += writer(benchmark, cases[row["case_id"]], images, out, model)
        result.models[model] = out / MODEL_FOLDER[layout].format(model=model)
    result.files += _copy_sources(layout, benchmark, [cases[i] for i in dict.fromkeys(r["case_id"] for r in rows)], out, sorted(result.models))
    (out / "EXPORT.md").write_text(_readme(layout, out, sorted(result.models)))
    return result


# -- one writer per layout: (benchmark, case, output images of each turn, out, model) -> files written --


def _gedit(bench: Benchmark, case: Case, images: list[Path], out: Path, model: str) -> int:
    folder = out / model / "fullset" / str(case.meta["task_type"]) / str(case.meta["language"])
    folder.mkdir(parents=True, exist_ok=True)
    key = case.meta["key"]
    shutil.copyfile(images[-1], folder / f"{key}.png")
    source = bench.evaluator_source(case) if hasattr(bench, "evaluator_source") else case.source_image()
    source.save(folder / f"{key}_SRCIMG.png")
    return 2


def _imgedit(bench: Benchmark, case: Case, images: list[Path], out: Path, model: str) -> int:
    (out / model).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(images[-1], out / model / f"{case.meta['key']}.png")
    return 1


def _edival(bench: Benchmark, case: Case, images: list[Path], out: Path, model: str) -> int:
    folder = out / model / "multipass"
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{case.meta['image_index']}_input_raw"
    _square(case.source_image()).save(folder / f"{base}.png")
    for turn, path in enumerate(images, start=1):
        _square(load_image(path)).save(folder / f"{base}_turn_{turn}.png")
    return 1 + len(images)


def _kris(bench: Benchmark, case: Case, images: list[Path], out: Path, model: str) -> int:
    category, key = case.id.split("/", 1)
    folder = out / "results" / model / category
    folder.mkdir(parents=True, exist_ok=True)
    load_image(images[-1]).convert("RGB").save(folder / f"{key}.jpg", format="JPEG", quality=95, subsampling=0)  # KRIS reads {id}.jpg
    return 1


def _rise(bench: Benchmark, case: Case, images: list[Path], out: Path, model: str) -> int:
    folder = out / "outputs" / model / "images" / case.category
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(images[-1], folder / f"{case.id}.png")
    return 1


LAYOUTS: dict[str, Callable[..., int]] = {"gedit": _gedit, "imgedit": _imgedit, "edival": _edival, "kris": _kris, "rise": _rise}
LAYOUT_BENCHMARK = {"gedit": "gedit", "imgedit": "imgedit", "edival": "edival", "kris": "kris", "rise": "rise"}
MODEL_FOLDER = {
    "gedit": "{model}", "imgedit": "{model}", "edival": "{model}", "kris": "results/{model}", "rise": "outputs/{model}",
}


def _square(image: Image.Image) -> Image.Image:
    return image.convert("RGB").resize((EDIVAL_SIZE, EDIVAL_SIZE), Image.LANCZOS)


# -- the sources and index files each evaluator reads next to the outputs --------------------------


def _copy_sources(layout: str, bench: Any, cases: list[Case], out: Path, models: list[str]) -> int:
    if layout == "imgedit":
        index = {case.meta["key"]: {"id": case.meta["image"], "prompt": case.instructions[0], "edit_type": case.category} for case in cases}
        (out / "basic_edit.json").write_text(json.dumps(index, indent=4, ensure_ascii=False))
        for case in cases:
            _save_source(case, out / "original_images" / case.meta["image"], case.meta.get("source_path"))
        return 1 + len(cases)
    if layout == "edival":
        # eval.py reads ./oai_instruction_generation_output.csv: the rows of the exported images, as released
        path = bench.root / bench.csv_file
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            keep = {str(case.meta["image_index"]) for case in cases}
            rows = [row for row in reader if row["image_index"].strip() in keep]
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        (out / "oai_instruction_generation_output.csv").write_text(buffer.getvalue(), encoding="utf-8")
        return 1
    if layout == "kris":
        by_category: dict[str, dict[str, Any]] = {}
        for case in cases:
            category, key = case.id.split("/", 1)
            by_category.setdefault(category, {})[key] = case.meta["annotation"]
            for name, path in case.meta["files"].items():
                _save_source(case, out / "KRIS_Bench" / category / name, path)
        for category, annotation in by_category.items():
            (out / "KRIS_Bench" / category / "annotation.json").write_text(json.dumps(annotation, indent=2, ensure_ascii=False))
        return len(by_category) + sum(len(case.meta["files"]) for case in cases)
    if layout == "rise":
        (out / "data").mkdir(parents=True, exist_ok=True)
        (out / "data" / "data_total.json").write_text(json.dumps([case.meta["item"] for case in cases], indent=4, ensure_ascii=False))
        for case in cases:
            for name, path in case.meta["files"].items():
                _save_source(case, out / "data" / name, path)
        return 1 + sum(len(case.meta["files"]) for case in cases)
    return 0  # gedit and edival write their sources beside each output


def _save_source(case: Case, target: Path, path: str | None) -> None:
    """A byte copy of the source file when the benchmark read one, else the decoded source saved."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and Path(path).is_file():
        shutil.copyfile(path, target)
        return
    image = case.source_image()
    image.convert("RGB").save(target, format="PNG" if target.suffix.lower() == ".png" else "JPEG")


def _readme(layout: str, out: Path, models: list[str]) -> str:
    model = models[0] if models else "MODEL"
    commands = {
        "gedit": f"python test_gedit_score.py --save_path {out} --model_name {model}   # in Step1X-Edit/GEdit-Bench",
        "imgedit": (
            f"python basic_bench.py --result_img_folder {out / model} --edit_json {out / 'basic_edit.json'} "
            f"--origin_img_root {out / 'original_images'} --prompts_json prompts.json   # in ImgEdit/Benchmark/Basic"
        ),
        "edival": f"python eval.py --generation_folder {out / model} --modes multipass   # in EdiVal, with the exported CSV copied there",
        "kris": f"cd {out} && python metrics_common.py --models {' '.join(models)}   # with Kris_Bench's scripts copied there",
        "rise": f"python gpt_eval.py --data {out / 'data' / 'data_total.json'} --output {out / 'outputs' / model}   # in RISEBench",
    }
    lines = [f"# {layout} export", "", f"Model folders: {', '.join(models)}", "", "Run the official evaluator:", "", "    " + commands[layout], ""]
    return "\n".join(lines)
