"""What the model card reports: predictions made as analyze makes them, per-head scores, the
modality-subset table, the references (zero-shot FER, pooled-feature logistic regressions), the
time per utterance."""

from __future__ import annotations

import time

import numpy as np

from default_recipe.mix import Composed, mismatch_with_text, pair_with_text
from default_recipe.settings import EMOTIONS, HEADS


def predict(ckpt, samples: list, *, drop: tuple[str, ...] = ()) -> list:
    """The checkpoint's predictions (inference.UtterancePrediction) exactly as analyze makes them,
    with `drop` modalities removed."""
    from mfsa_pipe.analysis.inference import Predictor

    predictor = ckpt if hasattr(ckpt, "predict") else Predictor(ckpt, device="cpu")
    feeds = [{m: (s.features(m)[:0] if m in drop else s.features(m)) for m in ("text", "audio", "vision")}
             for s in samples]
    return predictor.predict(feeds, batch_size=64)


def head_scores(preds: list, samples: list, head: str, *, per_sample: bool = False) -> dict:
    """accuracy, weighted/macro F1, confusion and ECE of one head over the samples labelled for it;
    per_sample: also whether each was right ("correct", for the card's paired comparison)."""
    from sklearn.metrics import f1_score

    from mfsa_pipe.training.metrics import expected_calibration_error

    h = list(HEADS).index(head)
    classes = HEADS[head]
    keep = [i for i, s in enumerate(samples) if s.label[h] >= 0]
    truth = np.array([samples[i].label[h] for i in keep], np.int64)
    probs = np.array([[preds[i].prediction.heads[head].probabilities[c] for c in classes] for i in keep])
    if not keep:
        return {"n": 0}
    guess = probs.argmax(1)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (truth, guess), 1)
    scores = {"n": len(keep), "acc": float(np.mean(guess == truth)),
              "weighted_f1": float(f1_score(truth, guess, average="weighted", labels=range(len(classes)), zero_division=0)),
              "macro_f1": float(f1_score(truth, guess, average="macro", labels=sorted(set(truth)), zero_division=0)),
              "ece": float(expected_calibration_error(probs, truth)), "confusion": confusion.tolist()}
    return {**scores, "correct": (guess == truth).astype(int).tolist()} if per_sample else scores


def crema_row(sample, pred) -> dict:
    """One CREMA-D clip's answer for the card: truth, emotion (with its p), sentiment, what was absent."""
    emotion, sentiment = pred.prediction.heads["emotion"], pred.prediction.heads["sentiment"]
    return {"file": sample.id, "truth": EMOTIONS[sample.label[0]], "emotion": emotion.label,
            "p": round(emotion.probabilities[emotion.label], 3), "sentiment": sentiment.label,
            "score": round(sentiment.score, 3), "absent": pred.absent}


def subset_table(ckpt, data: dict, test_spk: list[str], seed: int) -> dict:
    """Every modality subset on held-out speakers (emotion head)."""
    av = [s for s in data["av_all"] if s.group in test_spk]
    voice = [s for s in data["voice_all"] if s.group in test_spk]
    paired = Composed([], pair_with_text(av, data["text"]["test"], repeat=1, seed=seed + 7))
    paired = [paired[i] for i in range(len(paired))]
    rows = {
        "face + voice (AV clips)": (av, ()),
        "face only (AV clips, audio silent)": (av, ("audio",)),
        "voice only (AV clips, no video)": (av, ("vision",)),
        "voice only (audio-only clips)": (voice, ()),
        "words + voice + face (AV clips + a MELD dev sentence of the same emotion)": (paired, ()),
        "words + face (same pairs, audio silent)": (paired, ("audio",)),
    }
    return {name: head_scores(predict(ckpt, s, drop=d), s, "emotion", per_sample=True) for name, (s, d) in rows.items()}


def top_emotion(pred) -> tuple[str, float]:
    """(the emotion head's answer, its probability) of one UtterancePrediction."""
    return max(pred.prediction.heads["emotion"].probabilities.items(), key=lambda kv: kv[1])


def disagreement(ckpt, data: dict, test_spk: list[str], seed: int) -> dict:
    """Words that disagree with the voice and face: held-out AV clips beside a MELD dev sentence of
    another emotion (all three fed). Which side the answer follows, and how sure it is."""
    av = [s for s in data["av_all"] if s.group in test_spk]
    pairs = [p for p in mismatch_with_text(av, data["text"]["test"], repeat=1, seed=seed + 11) if p[2] == "clip"]
    samples = Composed([], pairs)
    preds = predict(ckpt, [samples[i] for i in range(len(samples))])
    top = [top_emotion(p) for p in preds]
    clip_side = [EMOTIONS[c.label[0]] == t[0] for (c, _, _), t in zip(pairs, top)]
    text_side = [EMOTIONS[w.label[0]] == t[0] for (_, w, _), t in zip(pairs, top)]
    return {"n": len(pairs), "clip_side": float(np.mean(clip_side)), "text_side": float(np.mean(text_side)),
            "mean_top_p": float(np.mean([t[1] for t in top])), "confident": float(np.mean([t[1] >= 0.5 for t in top]))}


def neutral_clips(ckpt, data: dict, test_spk: list[str]) -> dict:
    """Calm faces and voices: held-out neutral AV clips (face + voice), how often the answer is
    another emotion with p >= 0.5."""
    av = [s for s in data["av_all"] if s.group in test_spk and EMOTIONS[s.label[0]] == "neutral"]
    top = [top_emotion(p) for p in predict(ckpt, av)]
    return {"n": len(av), "neutral": float(np.mean([t[0] == "neutral" for t in top])),
            "confident_other": float(np.mean([t[0] != "neutral" and t[1] >= 0.5 for t in top])),
            "mean_top_p": float(np.mean([t[1] for t in top]))}


FER_COLUMNS = {"neutral": "emo_neutral", "happy": "emo_happy", "sad": "emo_sad", "angry": "emo_angry",
               "fear": "emo_fear", "surprise": "emo_surprise"}


def fer_zero_shot(samples: list, columns: list[str]) -> dict:
    """The facial extractor's own FER model: mean probabilities over face frames, argmax over the 6 labels."""
    names = list(FER_COLUMNS)
    truth, guess = [], []
    for s in samples:
        face = s.vision[:, columns.index("face_present")] > 0.5
        probs = s.vision[face][:, [columns.index(FER_COLUMNS[c]) for c in names]].mean(0) if face.any() else None
        truth.append(EMOTIONS[s.label[0]])
        guess.append(names[int(np.argmax(probs))] if probs is not None else "neutral")
    return {"n": len(samples), "acc": float(np.mean(np.array(truth) == np.array(guess)))}


def pooled(s, modalities) -> np.ndarray:
    parts = []
    for m in modalities:
        x = s.features(m)
        parts += [x.mean(0), x.std(0)] if x.shape[0] else [np.zeros(x.shape[1])] * 2
    return np.concatenate(parts)


def pooled_logreg(train: list, valid: list, test: list, modalities: tuple[str, ...]) -> dict:
    """Reference: logistic regression on clip-pooled mean and std (C chosen on the valid speaker)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xs = {k: np.stack([pooled(s, modalities) for s in v]) for k, v in (("tr", train), ("va", valid), ("te", test))}
    ys = {k: np.array([s.label[0] for s in v]) for k, v in (("tr", train), ("va", valid), ("te", test))}
    scaler = StandardScaler().fit(xs["tr"])
    best = max(((float(np.mean(LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(xs["tr"]), ys["tr"])
                               .predict(scaler.transform(xs["va"])) == ys["va"])), c) for c in (0.01, 0.1, 1.0)))
    clf = LogisticRegression(C=best[1], max_iter=3000).fit(scaler.transform(xs["tr"]), ys["tr"])
    correct = clf.predict(scaler.transform(xs["te"])) == ys["te"]
    return {"n": len(test), "acc": float(np.mean(correct)), "C": best[1], "correct": correct.astype(int).tolist()}


def text_logreg(data: dict) -> dict:
    """Reference on MELD dev: logistic regression on the mean and max of the same word vectors,
    trained on MELD train (C chosen on GoEmotions dev would favour another domain: fixed C = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    feat = lambda s: np.concatenate([s.text.mean(0), s.text.max(0)]) if s.text.shape[0] else np.zeros(2 * s.text.shape[1])  # noqa: E731
    train = [s for s in data["text"]["train"] if s.id.startswith("meld-")]
    test = data["text"]["test"]
    out = {}
    for h, head in enumerate(HEADS):
        tr = [s for s in train if s.label[h] >= 0]
        te = [s for s in test if s.label[h] >= 0]
        clf = LogisticRegression(C=1.0, max_iter=3000).fit(np.stack([feat(s) for s in tr]), [s.label[h] for s in tr])
        guess = clf.predict(np.stack([feat(s) for s in te]))
        truth = [s.label[h] for s in te]
        out[head] = {"n": len(te), "acc": float(np.mean(guess == np.array(truth))),
                     "weighted_f1": float(f1_score(truth, guess, average="weighted"))}
    return out


def text_scores(ckpt, samples: list) -> dict:
    preds = predict(ckpt, samples)
    return {head: head_scores(preds, samples, head) for head in HEADS}


def time_per_utterance(predictor, data: dict) -> float:
    """Model time per utterance on CPU (one at a time, as analyze sees a short clip), median of 40."""
    pool = (data["av_all"] + data["text"]["test"])[:40]
    times = []
    for s in pool:
        t0 = time.perf_counter()
        predict(predictor, [s])
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 1)
