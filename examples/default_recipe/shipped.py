"""The shipped model: the recipe on 7 speakers, calibrated, measured, copied to the model folder;
and `analyze` run with it on the shared test clips."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from default_recipe.fitting import as_bundle, fit
from default_recipe.measures import crema_row, predict, text_scores, time_per_utterance
from default_recipe.mix import training_sets
from default_recipe.settings import FINAL_VALID


def final_model(args, data: dict, clip_temperatures: dict) -> dict:
    import shutil

    from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
    from mfsa_pipe.analysis.inference import Predictor
    from mfsa_pipe.training.evaluation import calibrate

    speakers = sorted({s.group for s in data["av_all"]})
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(2)
    train_spk = [s for s in speakers if s != FINAL_VALID]
    res = fit(data, args.work / "final", train_spk=train_spk, valid_spk=[FINAL_VALID], seed=args.seed, quick=args.quick)
    _, valid = training_sets(data, train_spk=train_spk, valid_spk=[FINAL_VALID], seed=args.seed, quick=args.quick)
    ckpt = calibrate(load_checkpoint(res.checkpoint), as_bundle(data, {"valid": valid}), "valid", device="cpu",
                     group_temperatures={"other": clip_temperatures["temperature"]},
                     group_source=f"cross-validation: the fold models' held-out clips "
                                  f"({clip_temperatures['samples']} clip samples of {2 * clip_temperatures['folds']} speakers)")
    save_checkpoint(ckpt, res.checkpoint)
    predictor = Predictor(ckpt, device="cpu")
    crema = data["crema"]
    crema_preds = predict(predictor, crema)
    out = {
        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "seconds": round(time.perf_counter() - t0, 1),
        "meld_dev": text_scores(predictor, data["text"]["test"]),
        "goemotions_dev": text_scores(predictor, data["text"]["valid"]),
        "calibration": ckpt.metrics.get("calibration"),
        "text_logit_bias": (ckpt.metrics.get("text_logit_bias") if len(res.members) == 1 else  # an ensemble: each run's
                            [load_checkpoint(path).metrics.get("text_logit_bias") for _, path in res.members]),
        "crema_d": [crema_row(s, p) for s, p in zip(crema, crema_preds)],
        "parameters": sum(int(np.prod(v.shape)) for v in ckpt.state_dict.values()),
        "checkpoint_bytes": Path(res.checkpoint).stat().st_size,
        "ms_per_utterance": time_per_utterance(predictor, data),
        "clips": clip_answers(Path(res.checkpoint), args.emo.parent / "media", args.cache, args.work / "clips"),
    }
    target = args.model_dir if not args.quick else args.work
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(res.checkpoint, target / "model.ckpt")
    return out


CLIPS = {"WolfgangLanger_Pexels.mp4": "silent track; the face turns sad -> frightened -> happy",
         "grid_id2_vcd_swwp2s.mpg": "a calm speaker reading a GRID command sentence",
         "single_face.mp4": "one face, room noise", "jfk.flac": "speech only (JFK's inaugural address)"}


def clip_answers(ckpt_path: Path, media: Path, cache: Path, out: Path) -> list[dict]:
    """`analyze` (no video rendering) on the shared test clips: what each utterance is called."""
    from mfsa_pipe.analysis.video import analyze

    rows = []
    for name, what in CLIPS.items():
        report = analyze(media / name, checkpoint=ckpt_path, out_dir=out / Path(name).stem, device="cpu",
                         render_video=False, cache_dir=cache)
        spans = []
        for u in report.utterances:
            if u.prediction is None or not u.prediction.heads:
                continue
            emo, sen = u.prediction.heads["emotion"], u.prediction.heads["sentiment"]
            used = [m for m, use in (u.modalities or {}).items() if use.used]
            spans.append({"start": round(u.start, 2), "end": round(u.end, 2), "emotion": emo.label,
                          "p": round(emo.probabilities[emo.label], 3), "sentiment": sen.label,
                          "score": round(float(sen.score), 3), "used": used})
        rows.append({"clip": name, "what": what, "utterances": spans})
    return rows
