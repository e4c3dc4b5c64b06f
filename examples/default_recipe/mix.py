"""The training sets: each source repeated or subsampled as MIX says, plus clips paired with
English sentences of the same (matched) or another (mismatched) emotion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from default_recipe.settings import MIX


class Composed:
    """A split made of index lists into sample pools (repetition and subsampling without copies),
    plus "paired" samples: a Javanese clip's audio (and vision) with the words of an English
    sentence. A pair is (clip, sentence, whose label): "clip" labels it with the clip's emotion
    (a matched pair: the sentence has the same emotion), "text" with the sentence's labels."""

    def __init__(self, items: list, pairs: list | None = None) -> None:
        self.items = items
        self.pairs = pairs or []

    def __len__(self) -> int:
        return len(self.items) + len(self.pairs)

    def __getitem__(self, index: int):
        from mfsa_pipe.datasets.base import Sample

        if index < len(self.items):
            return self.items[index]
        clip, sentence, whose = self.pairs[index - len(self.items)]
        if whose == "text":
            label = sentence.label.copy()
        else:  # a matched pair takes the sentence's sentiment where the clip's emotion implies none
            matched = clip.label[0] == sentence.label[0]
            label = np.array([clip.label[0], sentence.label[1] if clip.label[1] < 0 and matched else clip.label[1]],
                             np.int64)
        return Sample(id=f"{clip.id}+{sentence.id}#{whose}", text=sentence.text, audio=clip.audio,
                      vision=clip.vision, label=label, group=clip.group,
                      meta={"paired": whose, "whole": bool(clip.label[0] != sentence.label[0])})


def _sentences_by_emotion(texts: list) -> dict[int, list]:
    by_emotion: dict[int, list] = {}
    for s in texts:
        if s.label[0] >= 0 and s.text.shape[0] > 0:
            by_emotion.setdefault(int(s.label[0]), []).append(s)
    return by_emotion


def pair_with_text(clips: list, texts: list, *, repeat: int, seed: int) -> list:
    """Matched pairs: each clip `repeat` times with a random sentence of its emotion."""
    by_emotion = _sentences_by_emotion(texts)
    rng = np.random.default_rng(seed)
    return [(c, by_emotion[int(c.label[0])][int(rng.integers(len(by_emotion[int(c.label[0])])))], "clip")
            for _ in range(repeat) for c in clips if int(c.label[0]) in by_emotion]


def mismatch_with_text(clips: list, texts: list, *, repeat: int, seed: int) -> list:
    """Mismatched pairs: each clip `repeat` times with a sentence of another emotion (drawn
    uniformly over the other emotions), fed twice, once with each side's labels. The expected loss
    is a half/half target: when words and voice/face disagree the model learns to hedge between
    them instead of letting one modality decide (a calm English sentence read by a voice that the
    Javanese-trained voice path hears as aroused). Such a pair is never thinned by modality
    dropout: its words alone (or its clip alone) would carry the other side's label."""
    by_emotion = _sentences_by_emotion(texts)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(repeat):
        for c in clips:
            others = [e for e in sorted(by_emotion) if e != int(c.label[0])]
            pool = by_emotion[others[int(rng.integers(len(others)))]]
            sentence = pool[int(rng.integers(len(pool)))]
            pairs += [(c, sentence, "clip"), (c, sentence, "text")]
    return pairs


def rare_emotion_repeats(sentences: list, *, power: float, sentiment: bool = True) -> list:
    """Extra copies of the sentences of rare emotions: each sentence appears round((n_max / n_c)
    ** power) times in all, n_c the count of its emotion (power 0: none, 1: balanced classes).
    sentiment False: the copies carry the emotion label only (the sentiment head keeps the
    sentences' own distribution: the rare emotions are mostly negative)."""
    labelled = [s for s in sentences if s.label[0] >= 0]
    if power <= 0 or not labelled:
        return []
    times = rare_emotion_times(labelled, power=power)
    copies = [s for s in labelled for _ in range(times[int(s.label[0])] - 1)]
    if sentiment:
        return copies
    return [replace(s, label=np.array([s.label[0], -1], np.int64)) for s in copies]


def rare_emotion_times(sentences: list, *, power: float) -> dict[int, int]:
    """emotion index -> how often each of its sentences appears in all: round((n_max / n_c) ** power)."""
    counts = np.bincount([int(s.label[0]) for s in sentences if s.label[0] >= 0])
    return {c: int(round((counts.max() / n) ** power)) for c, n in enumerate(counts) if n}


def training_sets(data: dict, *, train_spk: list[str], valid_spk: list[str], seed: int, quick: bool):
    """train / valid Composed splits for a set of training and validation speakers."""
    from mfsa_pipe.datasets.base import Sample

    rng = np.random.default_rng(seed)
    text_train, text_valid = data["text"]["train"], data["text"]["valid"]
    meld = [s for s in text_train if s.id.startswith("meld-")]
    other = [s for s in text_train if not s.id.startswith("meld-")]
    n_other = max(0, min(len(other), (MIX["text"] if not quick else 2000) - len(meld)))
    text_pick = meld + [other[i] for i in sorted(rng.choice(len(other), n_other, replace=False))]
    text_pick += rare_emotion_repeats(meld, power=MIX["meld_balance"], sentiment=MIX["meld_balance_sentiment"])
    pick = lambda pool, spk: [s for s in data[pool] if s.group in spk]  # noqa: E731
    voice, av = pick("voice_all", train_spk), pick("av_all", train_spk)
    face = [Sample(id=f"{s.id}#face", text=s.text, audio=s.audio[:0], vision=s.vision, label=s.label, group=s.group,
                   meta={**s.meta, "face_only": True}) for s in av]
    train = Composed(text_pick + voice * MIX["voice_repeat"] + av * MIX["av_repeat"] + face * MIX["face_repeat"],
                     pair_with_text(av, text_train, repeat=MIX["paired_av_repeat"], seed=seed)
                     + pair_with_text(voice, text_train, repeat=MIX["paired_voice_repeat"], seed=seed + 1)
                     + mismatch_with_text(av, text_train, repeat=MIX["mismatched_av_repeat"], seed=seed + 2)
                     + mismatch_with_text(voice, text_train, repeat=MIX["mismatched_voice_repeat"], seed=seed + 3))
    n_valid = min(len(text_valid), MIX["valid_text"])
    valid = Composed([text_valid[i] for i in sorted(rng.choice(len(text_valid), n_valid, replace=False))]
                     + pick("voice_all", valid_spk) + pick("av_all", valid_spk) * 3)
    return train, valid
