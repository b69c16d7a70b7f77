"""Learning curves: TestCurve's figure at the last step is the test bits/dim trainer.test reports."""

from __future__ import annotations

import json
import math

import pytest

import train
from tests.conftest import compose_train


@pytest.mark.slow
def test_curve_rows_match_the_final_test_figure(tmp_path, synthetic_folder):
    curve = tmp_path / "curve.jsonl"
    cfg = compose_train(tmp_path / "run", [
        "data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16", "data.batch_size=8",
        "data.val_fraction=0.1", "trainer.max_steps=4", "seed=3",
        "+callbacks.curve._target_=glow.curve.TestCurve", "+callbacks.curve.eval_steps=[2,4]",
        f"+callbacks.curve.output={curve}"])
    results = train.run(cfg)
    rows = [json.loads(line) for line in curve.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["test_images"] == results["test_images"] > 0 and r["test_nonfinite"] == 0 for r in rows)
    assert rows[0]["test_bpd"] != rows[1]["test_bpd"]  # the model trained in between
    # same weights, same split, same dequantisation noise stream: the same figure as trainer.test
    assert math.isclose(rows[1]["test_bpd"], results["test_bpd"], rel_tol=1e-5)
    assert rows[0]["seconds"] <= rows[1]["seconds"]


def test_summary_is_mean_min_max_over_seeds():
    from scripts.learning_curve import summarise

    rows = [dict(variant="a", seed=s, step=100, test_bpd=v) for s, v in enumerate([3.0, 2.0, 4.0])]
    rows.append(dict(variant="a", seed=3, step=100, test_bpd=None))  # a non-finite figure is left out
    assert summarise(rows) == {"a": {100: (3.0, 2.0, 4.0, 3)}}
