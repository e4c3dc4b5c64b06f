"""The default model's recipe (examples/default_recipe/, run by examples/train_default_model.py): its
label mapping, the paired three-modality samples, and the subset table and card it produces (on a tiny untrained
checkpoint and synthetic samples: this checks the measuring code, not the model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from default_recipe import cross_validation, fitting, measures, mix, settings, sources  # noqa: E402  (examples/default_recipe/)
from default_recipe.card import write_card  # noqa: E402

from extractors.pipeline import feature_spec  # noqa: E402
from mfsa_pipe.checkpoint import Checkpoint  # noqa: E402
from mfsa_pipe.datasets.base import NormStats, Sample  # noqa: E402
from mfsa_pipe.analysis.inference import Predictor  # noqa: E402
from models.registry import build_model, config_from_dict  # noqa: E402

SPEC = feature_spec()
DIMS = {m: int(SPEC[m]["dim"]) for m in ("text", "audio", "vision")}
LABEL_SPEC = {"task": "multihead", "heads": [{"name": h, "classes": c} for h, c in settings.HEADS.items()]}


def test_goemotions_rows_map_names_and_blank_unclear_heads(tmp_path):
    for head, names, rows in (
        ("ekman", "anger disgust fear joy neutral sadness surprise",
         ["I love it\t3\ta1", "mixed\t0,5\ta2", "??? \t4\ta3", "meh\t4\ta4"]),
        ("sentiment", "ambiguous negative neutral positive",
         ["I love it\t3\ta1", "mixed\t1\ta2", "??? \t2\ta3", "meh\t0\ta4"]),
    ):
        folder = tmp_path / "goemotions" / head
        folder.mkdir(parents=True)
        (folder / "labels.txt").write_text("\n".join(names.split()))
        (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    rows = {r["id"]: r for r in sources.goemotions_rows(tmp_path, "train.tsv", "train")}
    assert rows["goemo-train-a1"]["emotion"] == "happy" and rows["goemo-train-a1"]["sentiment"] == "positive"
    assert rows["goemo-train-a2"]["emotion"] == "" and rows["goemo-train-a2"]["sentiment"] == "negative"
    assert rows["goemo-train-a4"]["sentiment"] == ""  # ambiguous is no sentiment label
    assert set(r["emotion"] for r in rows.values()) <= set(settings.EMOTIONS) | {""}


def test_meld_punctuation_is_repaired():
    assert sources.fix_text("You must\x92ve had your hands full\x85") == "You must've had your hands full..."
    assert sources.fix_text("company\u2019s") == "company's"


def _sample(i: int, emotion: int, sentiment: int, modalities: str, group: str) -> Sample:
    rng = np.random.default_rng(i)
    feats = {}
    for m in ("text", "audio", "vision"):
        t = {"text": 6, "audio": 25, "vision": 30}[m] if m in modalities else 0
        x = rng.normal(size=(t, DIMS[m])).astype(np.float32)
        if m == "audio" and t:
            x[:, SPEC["audio"]["columns"].index("loudness")] = 1.0  # loud and voiced: present
            x[:, SPEC["audio"]["columns"].index("voicing_prob")] = 0.9
        if m == "vision" and t:
            x[:, SPEC["vision"]["columns"].index("face_present")] = 1.0
        feats[m] = x
    return Sample(id=f"s{i}", label=np.array([emotion, sentiment], np.int64), group=group, **feats)


@pytest.fixture(scope="module")
def data():
    clips = [_sample(i, i % 6, -1 if i % 6 == 5 else i % 3, "audio+vision", f"jv0{1 + i % 2}") for i in range(12)]
    voice = [_sample(100 + i, i % 6, i % 3, "audio", f"jv0{1 + i % 2}") for i in range(12)]
    text = [_sample(200 + i, i % 7, i % 3, "text", "meld") for i in range(21)]
    return {"av_all": clips, "voice_all": voice, "text": {"train": text, "valid": text, "test": text},
            "feature_spec": SPEC, "label_spec": LABEL_SPEC}


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    config = config_from_dict("mfsa", {"dims": [DIMS["text"], DIMS["audio"], DIMS["vision"]], "task": "multihead",
                                       "head_sizes": [7, 3], "d": 8, "d_h": 16, "num_heads": 2, "psa_layers": 1,
                                       "hca_layers": 1, "fusion_heads": 2, "fusion_ffn": 16, "wal_hidden": 8})
    model = build_model("mfsa", config)
    return Predictor(Checkpoint(model_name="mfsa", model_config=config.to_dict(), label_spec=LABEL_SPEC,
                                feature_spec=SPEC, normalization=NormStats.identity(DIMS),
                                state_dict=model.state_dict()), device="cpu")


def test_paired_samples_have_all_three_modalities_and_the_clip_emotion(data):
    pairs = mix.pair_with_text(data["av_all"], data["text"]["train"], repeat=2, seed=0)
    split = mix.Composed(data["av_all"][:3], pairs)
    assert len(split) == 3 + 2 * len(data["av_all"])
    for i in range(3, len(split)):
        s = split[i]
        clip, sentence, whose = pairs[i - 3]
        assert whose == "clip" and not s.meta["whole"]  # matched pairs may be thinned by modality dropout
        assert all(s.features(m).shape[0] > 0 for m in ("text", "audio", "vision"))
        assert s.label[0] == clip.label[0] == sentence.label[0]  # same emotion
        # sentiment: the clip's where it has one, else the sentence's
        assert s.label[1] == (clip.label[1] if clip.label[1] >= 0 else sentence.label[1])


def test_mismatched_pairs_come_twice_with_each_sides_labels_and_stay_whole(data):
    pairs = mix.mismatch_with_text(data["av_all"], data["text"]["train"], repeat=3, seed=0)
    assert len(pairs) == 2 * 3 * len(data["av_all"])
    split = mix.Composed([], pairs)
    others = set()
    for i in range(0, len(split), 2):
        by_clip, by_text = split[i], split[i + 1]
        clip, sentence, _ = pairs[i]
        assert pairs[i + 1][:2] == (clip, sentence) and clip.label[0] != sentence.label[0]
        assert by_clip.label[0] == clip.label[0] and by_clip.label[1] == clip.label[1]  # no borrowed sentiment
        assert list(by_text.label) == list(sentence.label)
        assert by_clip.meta["whole"] and by_text.meta["whole"] and by_clip.id != by_text.id
        assert np.array_equal(by_clip.text, by_text.text) and np.array_equal(by_clip.audio, clip.audio)
        others.add((int(clip.label[0]), int(sentence.label[0])))
    assert len({b for _, b in others}) >= 5  # drawn over the other emotions, not one


def test_disagreement_and_neutral_measures(data, predictor):
    d = measures.disagreement(predictor, data, ["jv01"], seed=0)
    assert d["n"] == sum(s.group == "jv01" for s in data["av_all"])
    assert 0 <= d["clip_side"] + d["text_side"] <= 1 and 1 / 7 <= d["mean_top_p"] <= 1 and 0 <= d["confident"] <= 1
    n = measures.neutral_clips(predictor, data, ["jv01"])
    assert n["n"] == sum(s.group == "jv01" and s.label[0] == 0 for s in data["av_all"]) > 0
    assert 0 <= n["neutral"] + n["confident_other"] <= 1


def test_subset_table_covers_every_subset_and_masks_what_it_drops(data, predictor):
    table = measures.subset_table(predictor, data, ["jv01"], seed=0)
    assert any(name.startswith("face only") for name in table)
    assert any(name.startswith("voice only") for name in table)
    assert any(name.startswith("words + voice + face") for name in table)
    for name, row in table.items():
        assert row["n"] > 0 and 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["ece"] <= 1.0
        assert np.asarray(row["confusion"]).sum() == row["n"]
    face_only = [s for s in data["av_all"] if s.group == "jv01"]
    preds = measures.predict(predictor, face_only, drop=("audio",))
    assert all(p.absent.get("audio") and p.modality_weights["audio"] == 0.0 for p in preds)


def test_card_is_written_from_the_measured_figures(data, predictor, tmp_path):
    table = measures.subset_table(predictor, data, ["jv01"], seed=0)
    n_av = table["face + voice (AV clips)"]["n"]
    text = measures.text_scores(predictor, data["text"]["test"])
    ref = {h: {"n": 1, "acc": 0.5, "weighted_f1": 0.4} for h in settings.HEADS}
    fold = {"fold": 0, "test_speakers": ["jv01"], "valid_speaker": "jv02", "train_speakers": [], "best_epoch": 1,
            "subsets": table, "fer_zero_shot": measures.fer_zero_shot(data["av_all"], SPEC["vision"]["columns"]),
            "logreg_av": {"n": n_av, "acc": 0.5, "correct": [1, 0] * (n_av // 2) + [1] * (n_av % 2)}, "logreg_voice": {"n": 6, "acc": 0.5}, "meld_dev": text,
            "disagreement": {"n": 6, "clip_side": 0.5, "text_side": 0.25, "mean_top_p": 0.55, "confident": 0.4},
            "neutral_clips": {"n": 2, "neutral": 0.5, "confident_other": 0.0, "mean_top_p": 0.6}}
    cal = {"samples": 10, "ece_bins": 15, **{h: {"temperature": 1.2, "ece_before": 0.2, "ece_after": 0.1,
                                                  "nll_before": 1.5, "nll_after": 1.4} for h in settings.HEADS}}
    final = {"parameters": 10, "checkpoint_bytes": 1000, "ms_per_utterance": 5.0, "meld_dev": text,
             "goemotions_dev": text, "calibration": cal,
             "crema_d": [{"file": "a.mp4", "truth": "sad", "emotion": "sad", "p": 0.4, "sentiment": "negative",
                          "score": -0.3, "absent": {"text": "no words"}}],
             "clips": [{"clip": "WolfgangLanger_Pexels.mp4", "what": "silent track",
                        "utterances": [{"start": 0.0, "end": 3.4, "emotion": "sad", "p": 0.61, "sentiment": "negative",
                                        "score": -0.52, "used": ["vision"]}]},
                       {"clip": "blank.mp4", "what": "nothing to read", "utterances": []}]}
    metrics = {"heads": settings.HEADS, "model_config": settings.MODEL, "training": settings.TRAINING, "mix": settings.MIX,
               "seed": 0, "licences": settings.LICENCES, "emotion_to_sentiment": settings.EMOTION_SENTIMENT,
               "data": {k: {"rows": 3} for k in ("text", "voice", "av", "crema")}, "text_logreg_meld_dev": ref,
               "cross_validation": [fold], "final": final, "total_seconds": 60.0}
    write_card(metrics, tmp_path / "MODEL_CARD.md")
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Seeds" not in card  # one seed: no spread to show
    other = json.loads(json.dumps(fold))
    for subset in other["subsets"].values():
        subset["acc"] = 0.25
    write_card({**metrics, "cross_validation_other_seeds": [{"seed": 1, "folds": [other]}]}, tmp_path / "seeds.md")
    seeds = (tmp_path / "seeds.md").read_text()
    fv = table["face + voice (AV clips)"]["acc"]
    assert "## Seeds: the same recipe trained again" in seeds
    assert "| 1 | 25.0 | 25.0 | 25.0 | 25.0 | 25.0 |" in seeds
    assert f"| **mean ± std over 2 seeds** | {100 * (fv + 0.25) / 2:.1f} ± {100 * abs(fv - 0.25) / 2:.1f} |" in seeds
    assert f"(mean over the seeds: {100 * (fv + 0.25) / 2:.1f} %)" in seeds
    # an ensemble: its runs alone, per seed, below the ensembles (the gate stays the ensembles')
    brief = lambda acc, seed: {"seed": seed, "subsets": {n: {"acc": acc} for n in table},  # noqa: E731
                               "meld_dev": text, "neutral_clips": {"neutral": 0.5}}
    ens = lambda f, s: {**f, "members": [brief(0.5, s), brief(0.75, s + 1)]}  # noqa: E731
    write_card({**metrics, "ensemble": {"members": 2}, "cross_validation": [ens(fold, 0)],
                "cross_validation_other_seeds": [{"seed": 2, "folds": [ens(other, 2)]}]}, tmp_path / "ens.md")
    ens_card = (tmp_path / "ens.md").read_text()
    assert "(each an ensemble of 2 runs, seeds s to s + 1, as shipped; the" in ens_card
    assert "| 2 (ensemble) | 25.0 | 25.0 |" in ens_card
    assert "| **mean ± std over 2 ensembles** |" in ens_card
    assert "| 3 (one run alone) | 75.0 | 75.0 |" in ens_card and "| 0 (one run alone) | 50.0 |" in ens_card
    assert "| **mean ± std over 4 runs alone** | 62.5 ± 12.5 |" in ens_card
    assert f"(mean over the seeds: {100 * (fv + 0.25) / 2:.1f} %; one run alone, mean: 62.5 %)" in ens_card
    write_card({**metrics, "ensemble": {"members": 2}, "cross_validation": [ens(fold, 0)]}, tmp_path / "ens1.md")
    assert "| **mean ± std over 2 runs alone** | 62.5 ± 12.5 |" in (tmp_path / "ens1.md").read_text()
    for name in table:
        assert name in card
    assert "GPL-3.0" in card and "CC BY 4.0" in card and "MIT" in card and "ODbL" in card
    assert "1 of 1 files" in card
    assert "| 0 | 50.0 | 25.0 | 0.55 | 40.0 | 50.0 | 0.0 |" in card  # the disagreement / calm-clip table
    assert "mismatched" in card
    assert "| WolfgangLanger_Pexels.mp4 | silent track | 0.0-3.4 | sad (0.61) | negative (-0.52) | vision |" in card
    assert "| blank.mp4 | nothing to read | - | no prediction | | |" in card
    assert f"Paired over all {n_av} held-out face+voice clips: MFSA right on {sum(table['face + voice (AV clips)']['correct'])}" in card


def test_paired_comparison_counts_discordant_clips_and_tests_them_exactly():
    from default_recipe.card import paired_comparison, wilson_interval

    fold = {"subsets": {"fv": {"correct": [1] * 10 + [0] * 2}}, "logreg_av": {"correct": [1] * 4 + [0] * 8}}
    cmp = paired_comparison([fold, fold], "fv")
    assert (cmp["n"], cmp["model"], cmp["ref"], cmp["only_model"], cmp["only_ref"]) == (24, 20, 8, 12, 0)
    assert cmp["p"] == pytest.approx(2 * 0.5 ** 12)  # exact two-sided binomial on 12 discordant clips
    lo, hi = wilson_interval(20, 24)
    assert lo < 20 / 24 < hi and (round(lo, 3), round(hi, 3)) == (0.641, 0.933)
    assert paired_comparison([{"subsets": {"fv": {}}, "logreg_av": {}}], "fv") is None  # an older cv.json


def test_rare_emotion_repeats_follow_the_power_of_the_count_ratio():
    """MIX["meld_balance"]: each sentence appears round((n_max / n_c) ** p)
    times in all; unlabelled sentences never repeat; p = 0 adds nothing; with sentiment=False the
    copies carry the emotion label only (the originals keep theirs)."""
    sentences = [Sample(id=f"s{i}", text=np.zeros((1, 3), np.float32), audio=np.zeros((0, 2), np.float32),
                        vision=np.zeros((0, 2), np.float32), label=np.array([e, -1]))
                 for i, e in enumerate([0] * 16 + [1] * 4 + [2] * 1 + [-1] * 3)]
    extra = mix.rare_emotion_repeats(sentences, power=0.5)
    counts = np.bincount([int(s.label[0]) for s in extra], minlength=3)
    assert counts.tolist() == [0, 4 * (2 - 1), 1 * (4 - 1)]  # sqrt(16 / 4) = 2 copies, sqrt(16 / 1) = 4
    assert mix.rare_emotion_repeats(sentences, power=0.0) == []
    rated = [Sample(id=s.id, text=s.text, audio=s.audio, vision=s.vision, label=np.array([s.label[0], 2]))
             for s in sentences]
    emotion_only = mix.rare_emotion_repeats(rated, power=0.5, sentiment=False)
    assert len(emotion_only) == len(extra) and all(int(s.label[1]) == -1 for s in emotion_only)
    assert all(int(s.label[1]) == 2 for s in rated) and all(int(s.label[1]) == 2 for s in
                                                             mix.rare_emotion_repeats(rated, power=0.5))


def test_card_names_the_modalities_whose_read_out_takes_the_extremes():
    from default_recipe.card import _pooled_readout

    assert _pooled_readout({"pooled_logits": False}) == ""
    plain = _pooled_readout({"pooled_logits": True, "pooled_extremes": [False, False, False]})
    assert "mean and standard deviation is added" in plain and "max" not in plain
    assert "(for the words also the max and min over time)" in _pooled_readout(
        {"pooled_logits": True, "pooled_extremes": [True, False, False]})
    both = _pooled_readout({"pooled_logits": True, "pooled_standardize": True, "pooled_aux_weight": 1.0})
    assert "the words, voice and face statistics standardised" in both and both.endswith(".")
    assert "the words, voice and face read-outs' logits alone" in both and "`pooled_aux_weight` 1.0" in both
    clips = _pooled_readout({"pooled_logits": True, "pooled_standardize": [False, True, True], "pooled_aux_weight": 1.0,
                             "pooled_aux_modalities": [False, True, True]})
    assert "the voice and face statistics standardised" in clips and "the voice and face read-outs'" in clips
    assert "pooled_standardize" not in plain and "pooled_aux_weight" not in plain
    assert "pooled_aux_exclusive" not in clips
    exclusive = _pooled_readout({"pooled_logits": True, "pooled_aux_weight": 1.0, "pooled_aux_exclusive": True,
                                 "pooled_aux_modalities": [False, True, True]})
    assert "(`pooled_aux_exclusive`: only on samples without the words, whose label may be theirs)" in exclusive


def test_face_prior_columns_are_looked_up_by_name_in_the_default_vision_features(monkeypatch):
    from default_recipe.card import _face_prior, _pooled_readout
    from models.mfsa import MFSAConfig

    columns = SPEC["vision"]["columns"]
    monkeypatch.setattr(fitting, "MODEL", {**settings.MODEL, "face_prior_weight": 0.25})
    resolved = fitting.model_overrides(SPEC)
    named = [sorted(columns[i] for i in group) for group in resolved["face_prior_columns"]]
    assert named[:7] == [[f"emo_{e}"] for e in settings.EMOTIONS]
    assert named[7:] == [["emo_angry", "emo_disgust", "emo_fear", "emo_sad"], ["emo_neutral"], ["emo_happy"]]
    assert columns[resolved["face_prior_presence"]] == "face_present"
    config = MFSAConfig.from_dict({**resolved, "task": "multihead", "head_sizes": (7, 3),
                                   "dims": (SPEC["text"]["dim"], SPEC["audio"]["dim"], SPEC["vision"]["dim"])})
    assert config.face_prior_weight == 0.25
    assert "`face_prior_weight` 0.25" in _face_prior(resolved, ["emotion", "sentiment"])
    assert _face_prior({}, ["emotion"]) == ""
    per_head = _face_prior({**resolved, "face_prior_weight": [0.75, 1.5]}, ["emotion", "sentiment"])
    assert "`face_prior_weight` (emotion 0.75, sentiment 1.5)" in per_head and "each head's logits as its weight" in per_head
    assert "`pooled_aux_weight` 1.0" in _pooled_readout(resolved)  # the card reads the recipe's MODEL with the prior
    monkeypatch.setattr(fitting, "MODEL", {k: v for k, v in settings.MODEL.items() if k != "face_prior_weight"})
    assert "face_prior_columns" not in fitting.model_overrides(SPEC)


def test_the_recipes_own_model_config_validates_for_the_two_heads():
    from models.mfsa import MFSA, MFSAConfig

    config = MFSAConfig.from_dict({**fitting.model_overrides(SPEC), "task": "multihead", "head_sizes": (7, 3),
                                   "dims": (SPEC["text"]["dim"], SPEC["audio"]["dim"], SPEC["vision"]["dim"])})
    weights = settings.MODEL["face_prior_weight"]
    assert config.face_prior_weights == (tuple(weights) if isinstance(weights, tuple) else (weights, weights))
    scale = MFSA(config).face_prior_scale
    assert scale.tolist() == [config.face_prior_weights[0]] * 7 + [config.face_prior_weights[1]] * 3


def test_the_card_states_the_words_bias_and_that_meld_dev_chose_its_scale():
    from default_recipe.card import _dev_choices, _text_bias

    m = {"heads": settings.HEADS, "mix": {"meld_balance": 0.0}, "text_bias": {"scale": 0.5, "heads": ["emotion"]},
         "final": {"text_logit_bias": {"samples": 4000, "emotion": {"bias": [-0.35, -0.15, 0.05, -0.05, 0.3, -0.05, 0.25]}}}}
    text = _text_bias(m)
    assert "4,000 MELD train sentences, times 0.5" in text and "neutral -0.35" in text and "disgust +0.25" in text
    fit = m["final"]["text_logit_bias"]
    two = _text_bias({**m, "final": {"text_logit_bias": [fit, {**fit, "emotion": {"bias": [0.1] * 7}}]}})
    assert "Each run fits its own" in two
    assert "run 0: emotion: neutral -0.35" in two and "run 1: emotion: neutral +0.10" in two
    assert "scale of the words' decision bias (0.5" in _dev_choices(m)
    off = {**m, "text_bias": {"scale": 0, "heads": ["emotion"]}}
    assert _text_bias(off) == "" and "MELD dev was never used for a choice" in _dev_choices(off)


def test_the_recipes_extraction_options_and_the_card_name_the_text_features():
    from default_recipe.card import _words

    from extractors.config import ExtractionConfig

    config = ExtractionConfig.from_dict(settings.EXTRACTION)
    assert feature_spec(config)["text"]["dim"] in (SPEC["text"]["dim"], SPEC["text"]["dim"] + 1)
    vader = {"extraction": {"text": {"lexicon": "vader"}}}
    assert "VADER valence" in _words(vader) and "1.2" in _words(vader)
    assert _words({}).endswith("text features 1.1)")  # metrics written before the option: the defaults
    assert _words({"extraction": {}}) == _words({})


def test_clips_temperature_comes_from_the_folds_held_out_clips(data, predictor, tmp_path, monkeypatch):
    """cv_clip_temperatures: fitted on the fold models' held-out clips; leave one fold out, compared
    with each fold model's own (here a deliberately useless T = 20: nearly uniform probabilities)."""
    import argparse
    from dataclasses import replace

    from default_recipe.card import _clip_temperatures

    from mfsa_pipe.checkpoint import save_checkpoint

    monkeypatch.setattr(cross_validation, "FOLDS", [["jv01"], ["jv02"]])
    args = argparse.Namespace(work=tmp_path, seed=0, quick=False)
    flat = replace(predictor.checkpoint, calibration={"temperature": {"emotion": 20.0, "sentiment": 20.0}})
    for k in range(2):
        cross_validation.fold_checkpoint(args, k, 0).parent.mkdir(parents=True)
        save_checkpoint(flat, cross_validation.fold_checkpoint(args, k, 0))
    got = cross_validation.cv_clip_temperatures(args, {**data, "text_path": tmp_path / "text.h5"})
    assert got["samples"] == 24 and got["folds"] == 2 and set(got["temperature"]) == {"emotion", "sentiment"}
    lofo = got["leave_one_fold_out"]
    assert lofo["emotion"]["n"] == 24 and lofo["sentiment"]["n"] == 22  # the clips without a sentiment label
    for head, r in lofo.items():
        assert r["mean_top_p_own"] < 1 / len(settings.HEADS[head]) + 0.02 < r["mean_top_p_cv"]
        assert 0 <= r["ece_cv"] <= 1 and r["nll_cv"] > 0
    card = "\n".join(_clip_temperatures(got))
    assert "fitted on the raw outputs of the shipped seed's 2 fold models" in card and "| emotion | 24 |" in card
    assert "of 4 speakers, each held out once" in card
    assert _clip_temperatures(None) == []
    cross_validation.fold_checkpoint(args, 1, 0).unlink()
    with pytest.raises(SystemExit, match="fold1/model.ckpt is missing: run without --skip-cv"):
        cross_validation.cv_clip_temperatures(args, {**data, "text_path": tmp_path / "text.h5"})


def test_the_cross_validations_ensembles_share_no_run():
    import argparse

    args = argparse.Namespace(work=Path("w"), seed=5, cv_seeds=3)
    members = settings.ENSEMBLE["members"]
    seeds = cross_validation.cv_seeds(args)
    assert seeds == [5 + j * members for j in range(3)]
    runs = [s + j for s in seeds for j in range(members)]
    assert len(set(runs)) == len(runs)
    assert cross_validation.fold_dir(args, 1, 5) == Path("w/cv/fold1")
    assert cross_validation.fold_dir(args, 1, seeds[1]) == Path(f"w/cv/seed{seeds[1]}/fold1")
    one = "model.ckpt" if members > 1 else "seed0/model.ckpt"
    assert cross_validation.fold_checkpoint(args, 1, 5) == Path("w/cv/fold1") / one
