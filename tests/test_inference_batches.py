"""The Predictor's batches: shortest first, fewer at a time where utterances are long (attention
memory grows with the square of the rows), answers in the samples' own order."""

import numpy as np
import pytest

from mfsa_pipe.analysis.inference import Predictor, length_batches


def test_batches_go_shortest_first_and_long_ones_fewer_at_a_time():
    rows = [5, 400, 10, 450, 3]
    # 3, 5, 10 together; 400 alone would fit 2 (2 x 400^2 <= 16 x 160^2), and 450 joins it: 2 x 450^2 fits too
    assert length_batches(rows, batch_size=16, rows_budget=16 * 160 ** 2) == [[4, 0, 2], [1, 3]]
    assert length_batches(rows, batch_size=2, rows_budget=10 ** 9) == [[4, 0], [2, 1], [3]]
    assert length_batches([900], batch_size=16, rows_budget=1) == [[0]]  # one sample always runs
    assert length_batches([], batch_size=16, rows_budget=1) == []
    budget = 16 * 160 ** 2
    for batch in length_batches(list(np.random.default_rng(0).integers(0, 600, 300)), batch_size=16, rows_budget=budget):
        assert len(batch) <= 16


def test_answers_come_back_in_the_samples_order_as_one_at_a_time(plumbing_checkpoint):
    predictor = Predictor(plumbing_checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    samples = [{m: rng.normal(size=(int(t), d)).astype(np.float32) for m, d in predictor.dims.items()}
               for t in rng.integers(1, 300, 24)]
    together = predictor.predict(samples)
    alone = [predictor.predict([s], batch_size=1)[0] for s in samples]
    assert [r.lengths for r in together] == [r.lengths for r in alone]
    for a, b in zip(together, alone):
        assert a.prediction.score == pytest.approx(b.prediction.score, abs=1e-5)
        assert a.modality_weights == pytest.approx(b.modality_weights, abs=1e-5)
