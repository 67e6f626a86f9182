"""Do a ShapeEdit VLM's vision features carry the objects? Linear probes on the merger's 16 tokens per scene.

Run:  python benchmarks/shapes_vlm_linear_probe.py MODEL [MODEL ...] [--train 600]

For `--train` + 300 training-stream scenes (seed 31: none of the presets' data; targets and sources
alternate), the vision tower + merger's output (16 tokens x hidden, flattened, standardised per
dimension on the first `--train`) is fed to a multinomial logistic regression per grid cell, trained
on `--train` scenes and tested on the other 300: the colour of the object in that cell, its shape
("none" if the cell is empty), then the number of objects and the background. The mean test accuracy
over the 9 cells is printed beside the majority-class rate. With the default 600 the probe itself is
data-starved (4096 features): raw pixels score below the majority class on shape and a random tower
0.80; `--train 2100` is the fairer ceiling (random tower 0.96 colour / 0.89 shape). A judge must compare the cell an instruction names: features that do not say
what is in a cell cannot be compared, however the language model is trained.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from refine.shapes.data import training_stream  # noqa: E402
from refine.shapes.world import POSITIONS  # noqa: E402

TRAIN = 600


def fit_score(x: np.ndarray, labels: list) -> float:
    """Test accuracy of an L2 multinomial logistic regression (full-batch LBFGS: sklearn is not a dependency)."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    target = torch.tensor([index[v] for v in labels])
    features = torch.tensor(x, dtype=torch.float32)
    layer = torch.nn.Linear(x.shape[1], len(classes))
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(features[:TRAIN]), target[:TRAIN]) + 1e-3 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((layer(features[TRAIN:]).argmax(1) == target[TRAIN:]).float().mean())


def vision_features(folder: str, images) -> np.ndarray:
    """(scenes, 16 x hidden) merger outputs, standardised per dimension on the first TRAIN scenes."""
    model, processor = AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), 50):
            batch = images[start : start + 50]
            inputs = processor.image_processor(batch, return_tensors="pt")
            out = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
            tokens = out.pooler_output if hasattr(out, "pooler_output") else out
            tokens = torch.cat(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens  # (batch * 16, hidden)
            chunks.append(tokens.reshape(len(batch), -1).numpy())
    x = np.concatenate(chunks)
    return (x - x[:TRAIN].mean(0)) / (x[:TRAIN].std(0) + 1e-6)


def main() -> None:
    global TRAIN  # read by fit_score and vision_features
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--train", type=int, default=TRAIN, help="probe training scenes (300 more are the test)")
    args = parser.parse_args()
    TRAIN = args.train
    torch.set_num_threads(1)
    start = time.process_time()
    cases = list(itertools.islice(training_stream(31), TRAIN + 300))
    scenes = [c.source if i % 2 else c.target for i, c in enumerate(cases)]
    images = [c.source_image if i % 2 else c.target_image for i, c in enumerate(cases)]
    for folder in args.models:
        x = vision_features(folder, images)
        row = {}
        for name, label in (("colour", lambda o: o.color if o else "none"), ("shape", lambda o: o.shape if o else "none")):
            accuracy, majority = [], []
            for position in POSITIONS:
                y = [label(s.at(position)) for s in scenes]
                accuracy.append(fit_score(x, y))
                values, counts = np.unique(y[:TRAIN], return_counts=True)
                majority.append(float(np.mean(np.array(y[TRAIN:]) == values[counts.argmax()])))
            row[name] = f"{np.mean(accuracy):.3f} (majority {np.mean(majority):.3f})"
        counts = [len(s.objects) for s in scenes]
        values, frequency = np.unique(counts[:TRAIN], return_counts=True)
        row["count"] = f"{fit_score(x, counts):.3f} (majority {np.mean(np.array(counts[TRAIN:]) == values[frequency.argmax()]):.3f})"
        row["background"] = f"{fit_score(x, [s.background for s in scenes]):.3f}"
        print(folder, row)
    print(f"cpu s {time.process_time() - start:.1f}")


if __name__ == "__main__":
    main()
