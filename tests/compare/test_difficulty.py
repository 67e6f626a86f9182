"""The gain by difficulty and category (`refine.compare.difficulty`, `benchmarks/gain_by_difficulty.py`) on synthetic runs."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from refine.compare import run_compare
from refine.compare.difficulty import difficulty_scores, gain_by_difficulty, quantile_bins
from refine.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def row(entry, case, seed, value, category="add"):
    return {"entry": entry, "case_id": case, "seed": seed, "category": category, "scores": {"overall": float(value)}}


def by_group(groups, entry):
    return {g.group: g for g in groups if g.entry == entry}


def test_cross_seed_bins_use_the_other_seeds_base_score():
    # base scores seed 0 low (0..0.25) and seed 1 high (1..0.75): on the other seed, every seed-1 item
    # is hard and every seed-0 item easy; on the same seed, the reverse. "new" gains 0.3 + 0.01 i on seed 1 only.
    rows = []
    for i in range(6):
        base = {0: i / 20, 1: 1 - i / 20}
        for seed in (0, 1):
            rows.append(row("base", f"c{i}", seed, base[seed]))
            rows.append(row("new", f"c{i}", seed, base[seed] + (0.3 + 0.01 * i if seed == 1 else 0.0)))
    report = gain_by_difficulty(rows, bins=2)
    cross, same = by_group(report.cross, "new"), by_group(report.same, "new")
    hand = 0.3 + 0.01 * np.mean(range(6))  # the seed-1 items' mean gain
    assert cross["1"].gain.mean == pytest.approx(hand) and cross["2"].gain.mean == pytest.approx(0.0)
    assert cross["1"].gain.low < hand < cross["1"].gain.high  # a real interval around the hand-computed mean
    assert cross["1"].binned_on == pytest.approx((0.0, 0.25))  # binned on seed 0's scores, measured on seed 1
    assert cross["1"].reference_mean == pytest.approx(np.mean([1 - i / 20 for i in range(6)]))
    assert same["1"].gain.mean == pytest.approx(0.0) and same["2"].gain.mean == pytest.approx(hand)
    assert cross["1"].n == same["1"].n == 6 and cross["1"].cases == 6


def noisy_run(gain_on_hard: float, cases: int = 600, noise: float = 0.1, seed: int = 0) -> list[dict]:
    """Cases of true quality mu in [0.2, 0.8]; base and "new" score mu + independent noise per seed, "new" +gain_on_hard where mu < 0.4."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.2, 0.8, cases)
    rows = []
    for i, m in enumerate(mu):
        for s in (0, 1):
            rows.append(row("base", f"c{i}", s, m + rng.normal(0, noise)))
            rows.append(row("new", f"c{i}", s, m + rng.normal(0, noise) + (gain_on_hard if m < 0.4 else 0.0)))
    return rows


def test_same_seed_bins_show_a_spurious_hard_case_gain_and_cross_seed_bins_do_not():
    report = gain_by_difficulty(noisy_run(gain_on_hard=0.0), bins=3)
    same, cross = by_group(report.same, "new"), by_group(report.cross, "new")
    # same seed: the hardest third drew bad base noise on the measured seed, the easiest good noise
    assert same["1"].gain.low > 0.03 and same["3"].gain.high < -0.03
    assert same["1"].gain.mean - same["3"].gain.mean > 0.1
    # other seed: no slope (standard error of the bin difference ~0.014)
    assert abs(cross["1"].gain.mean - cross["3"].gain.mean) < 0.04
    assert all(g.gain.low < 0.0 < g.gain.high for g in cross.values())
    # the bins themselves: on the measured seed the hardest bin's base is lower when binned on it
    assert same["1"].reference_mean < cross["1"].reference_mean


def test_cross_seed_bins_still_find_a_real_hard_case_gain():
    report = gain_by_difficulty(noisy_run(gain_on_hard=0.15), bins=3)
    cross = by_group(report.cross, "new")
    assert cross["1"].gain.low > 0.05  # the true gain sits in the hard third
    assert cross["3"].gain.low < 0.0 < cross["3"].gain.high  # and not in the easy one
    assert cross["1"].gain.mean - cross["3"].gain.mean > 0.08


def test_categories_hardest_first_with_hand_computed_means():
    rows = []
    gains = {"recolor": [0.1, 0.3], "swap": [0.0, -0.2]}  # per case, both seeds
    level = {"recolor": 0.8, "swap": 0.2}
    for category, values in gains.items():
        for j, g in enumerate(values):
            for seed in (0, 1):
                base = level[category] + 0.01 * seed + 0.02 * j
                rows.append(row("base", f"{category}{j}", seed, base, category))
                rows.append(row("new", f"{category}{j}", seed, base + g + 0.01 * seed, category))
    report = gain_by_difficulty(rows, bins=2)
    cats = by_group(report.categories, "new")
    assert [g.group for g in report.categories] == ["swap", "recolor"]  # swap's base is lower: hardest first
    for category, values in gains.items():
        hand = np.mean(values) + 0.005
        assert cats[category].gain.mean == pytest.approx(hand)
        assert cats[category].gain.low <= hand <= cats[category].gain.high
        assert (cats[category].n, cats[category].cases) == (4, 2)
    overall = by_group(report.overall, "new")["all"]
    assert overall.gain.mean == pytest.approx(np.mean([np.mean(v) for v in gains.values()]) + 0.005)


def test_per_case_unit_resamples_cases_and_keeps_the_item_mean():
    # 40 cases whose two seeds gain alike: resampling cases sees 40 units, resampling items 80
    rng = np.random.default_rng(0)
    rows = []
    for i, g in enumerate(rng.normal(0.0, 0.1, 40)):
        for s in (0, 1):
            rows += [row("base", f"c{i}", s, 0.5 + 0.01 * s), row("new", f"c{i}", s, 0.5 + 0.01 * s + g)]
    item = by_group(gain_by_difficulty(rows, bins=1).overall, "new")["all"]
    case = by_group(gain_by_difficulty(rows, bins=1, unit="case").overall, "new")["all"]
    assert case.gain.mean == pytest.approx(item.gain.mean)
    assert case.gain.low <= case.gain.mean <= case.gain.high
    assert (case.gain.high - case.gain.low) > 1.2 * (item.gain.high - item.gain.low)  # ~sqrt(2) wider


def test_helpers_and_refusals():
    base = {("c", 0): 0.2, ("c", 1): 0.6, ("c", 2): 1.0, ("d", 0): 0.5}
    assert difficulty_scores(base, "cross") == pytest.approx({("c", 0): 0.8, ("c", 1): 0.6, ("c", 2): 0.4})
    tied = quantile_bins({(f"c{i}", 0): 0.0 for i in range(10)}, bins=5)  # all tied: still equal counts
    assert sorted(np.bincount(list(tied.values()))) == [2, 2, 2, 2, 2]
    one_seed = [row("base", "a", 0, 0.5), row("new", "a", 0, 0.6), row("base", "b", 0, 0.1), row("new", "b", 0, 0.2)]
    with pytest.raises(InputError):
        gain_by_difficulty(one_seed, bins=2)
    with pytest.raises(InputError):
        gain_by_difficulty(noisy_run(0.0, cases=4), entries=["missing"], bins=2)


def test_command_line_writes_markdown_json_and_png(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in noisy_run(0.1, cases=30)) + "\n")
    spec = importlib.util.spec_from_file_location("gain_by_difficulty", ROOT / "benchmarks" / "gain_by_difficulty.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(run), "--bins", "3", "--resamples", "200", "--out", str(tmp_path / "out"), "--label", "new=the new arm"])
    out = tmp_path / "out"
    data = json.loads((out / "gain_by_difficulty.json").read_text())
    assert [g["group"] for g in data["cross_seed_bins"]] == ["1", "2", "3"] and data["labels"] == {"new": "the new arm"}
    markdown = (out / "gain_by_difficulty.md").read_text()
    assert "the new arm" in markdown and markdown.count("| 1 of 3 |") == 2  # the cross-seed and the naive table
    assert (out / "gain_by_difficulty.png").read_bytes()[:4] == b"\x89PNG"
    assert "1 of 3" in capsys.readouterr().out


def test_a_compare_run_with_two_seeds_writes_the_view(toy):
    run = run_compare(toy("two", cases=25, seeds=[0, 1]), console=Console(quiet=True))
    assert run.files["difficulty_chart"].read_bytes()[:4] == b"\x89PNG"
    markdown = run.files["difficulty"].read_text()
    assert "+spell" in markdown and markdown.count("| 1 of 5 |") == 2
    one_seed = run_compare(toy("one", cases=25), console=Console(quiet=True))
    assert "difficulty" not in one_seed.files and not (one_seed.out_dir / "difficulty.md").exists()
