"""Public CMU label layouts -> the generic labels CSV that `build-dataset` reads.

For a user who holds the raw CMU-MOSI / CMU-MOSEI videos (they cannot be downloaded here):

- `mosei_labels(...)`: the CMU-MOSEI segment labels CSV shipped by s3prl
  (`CMU_MOSEI_Labels.csv`: `file` (video id), `index` (segment), `start`, `end` (seconds),
  `label2a` (0 negative / 1 non-negative), `label2b` (-1 / 0 / 1), `label6` (argmax of the six
  emotion intensities in the order happy, sad, anger, surprise, disgust, fear), `label7` (the
  SDK's 7-class binning of the sentiment, -3..3), `split` (0 train, 1 valid, 2 test, 3 none)).
  It has no continuous sentiment: the default target `sentiment` uses `label7` as a number in
  [-3, 3] (regression on binned scores: Acc7/Acc2/F1 are comparable with the literature,
  MAE/Corr are measured against the binned truth and are not). `binary`, `ternary` and
  `emotion` give classification targets instead.
- `mmsa_labels(...)`: MMSA's `label.csv` (`video_id`, `clip_id`, `label` continuous in [-3, 3],
  `mode` train/valid/test), the label file distributed with the raw-video MOSI/MOSEI/SIMS
  releases used by MMSA-FET (videos at `Raw/<video_id>/<clip_id>.mp4`).
- `apply_cmu_folds(...)`: any generic CSV -> its `split` set from the CMU standard folds
  (`cmu_std_folds.json`: {"mosi"|"mosei": {"standard_train_fold"|"standard_valid_fold"|
  "standard_test_fold": [video ids]}}); rows of videos in no fold are dropped and counted.

All of them keep the video id as the `group`, so that a video's segments never straddle splits.

- `meld_labels(...)`: a MELD split CSV (`Utterance`, `Emotion`, `Sentiment`, `Dialogue_ID`,
  `Utterance_ID`: github.com/declare-lab/MELD, `data/MELD/*_sent_emo.csv`) -> text-only rows with
  the emotion names of the default model (joy -> happy, anger -> angry, sadness -> sad) and the
  sentiment as it is; the text as published (the tokeniser repairs its mis-encoded punctuation).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractors.errors import UserError
from mfsa_pipe.atomic import atomic_path
from mfsa_pipe.datasets.base import canonical_split

MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
MOSEI_TARGETS = ("sentiment", "binary", "ternary", "emotion")
MOSEI_SPLITS = {0: "train", 1: "valid", 2: "test"}  # 3: in no standard fold
FOLD_KEYS = {"standard_train_fold": "train", "standard_valid_fold": "valid", "standard_test_fold": "test"}
LAYOUT_TEMPLATES = {
    # the CMU_MOSEI.zip "Raw" tree: full videos and per-segment cuts (adjust with path_template)
    "full": "{file}.mp4",
    "segmented": "{file}_{index}.mp4",
}
GENERIC_COLUMNS = ("id", "path", "start", "end", "label", "split", "group")


class AdapterError(UserError, ValueError):
    """The input label file does not have the expected layout."""


@dataclass
class AdapterResult:
    rows: list[dict[str, Any]]
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.get("split") or ""] = out.get(r.get("split") or "", 0) + 1
        return out


def _read_csv(path: str | os.PathLike, *, fallback: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a UTF-8 CSV; `fallback`: the encoding to read it with when it is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"label file not found: {path}")
    for encoding in ("utf-8-sig",) + ((fallback,) if fallback else ()):
        try:
            with open(path, newline="", encoding=encoding) as fh:
                reader = csv.DictReader(fh)
                cols = [c.strip() for c in (reader.fieldnames or [])]
                return cols, [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        except UnicodeDecodeError as exc:
            error = exc
    raise AdapterError(f"{path} is not UTF-8{' or ' + fallback if fallback else ''} text ({error.reason} at byte "
                       f"{error.start}); save it as UTF-8 and run again")


def _need(cols: list[str], needed: tuple[str, ...], what: str, path) -> None:
    missing = [c for c in needed if c not in cols]
    if missing:
        raise AdapterError(f"{path}: not {what}: missing columns {missing} (found {cols})")


def load_folds(folds_json: str | os.PathLike, dataset: str) -> dict[str, str]:
    """{video_id: split} from cmu_std_folds.json for `dataset` ('mosi' or 'mosei')."""
    data = json.loads(Path(folds_json).read_text(encoding="utf-8"))
    if dataset not in data:
        raise AdapterError(f"{folds_json}: no {dataset!r} folds (found {sorted(data)})")
    out: dict[str, str] = {}
    for key, split in FOLD_KEYS.items():
        for vid in data[dataset].get(key, []):
            out[str(vid)] = split
    if not out:
        raise AdapterError(f"{folds_json}: the {dataset!r} folds are empty")
    return out


def mosei_labels(
    labels_csv: str | os.PathLike,
    *,
    target: str = "sentiment",
    layout: str = "full",
    path_template: str | None = None,
    folds_json: str | os.PathLike | None = None,
    keep_unassigned: bool = False,
) -> AdapterResult:
    """CMU_MOSEI_Labels.csv -> generic rows. `layout='full'`: one row per segment of the full
    video with start/end (the video is extracted once and sliced); `'segmented'`: one
    pre-cut file per segment, no start/end. `path_template` (fields {file}, {index}) overrides
    the layout's file naming. Split: the CSV's own column (0/1/2), or the standard folds when
    `folds_json` is given; rows in no fold (split 3) are dropped unless `keep_unassigned`."""
    if target not in MOSEI_TARGETS:
        raise AdapterError(f"target must be one of {MOSEI_TARGETS}, got {target!r}")
    if layout not in LAYOUT_TEMPLATES:
        raise AdapterError(f"layout must be one of {sorted(LAYOUT_TEMPLATES)}, got {layout!r}")
    cols, rows = _read_csv(labels_csv)
    _need(cols, ("file", "index", "start", "end", "label2a", "label2b", "label6", "label7", "split"),
          "a CMU-MOSEI labels CSV (s3prl layout)", labels_csv)
    template = path_template or LAYOUT_TEMPLATES[layout]
    folds = load_folds(folds_json, "mosei") if folds_json else None
    out, dropped, clamped = [], 0, 0
    for r in rows:
        vid, index = r["file"], int(float(r["index"]))
        if folds is not None:
            split = folds.get(vid)
        else:
            split = MOSEI_SPLITS.get(int(float(r["split"])))
        if split is None and not keep_unassigned:
            dropped += 1
            continue
        if target == "sentiment":
            label: Any = int(float(r["label7"]))
        elif target == "binary":
            label = "non-negative" if int(float(r["label2a"])) == 1 else "negative"
        elif target == "ternary":
            label = {-1: "negative", 0: "neutral", 1: "positive"}[int(float(r["label2b"]))]
        else:
            label = MOSEI_EMOTIONS[int(float(r["label6"]))]
        row = {
            "id": f"{vid}_{index}",
            "path": template.format(file=vid, index=index, video_id=vid),
            "label": label,
            "split": split or "",
            "group": vid,
        }
        if layout == "full":
            start, end = float(r["start"]), float(r["end"])
            if start < 0:  # a few segments start before 0 s in the SDK's annotations
                clamped += 1
                start = 0.0
            if end <= start:
                dropped += 1
                continue
            row["start"], row["end"] = start, end
        out.append(row)
    notes = [
        f"target {target!r}" + (" (label7: the SDK's 7-class binning, as a number in [-3, 3])" if target == "sentiment" else ""),
        f"split from {'the standard folds' if folds is not None else 'the CSV split column'}; {dropped} rows in no split dropped",
    ]
    if clamped:
        notes.append(f"{clamped} segment starts below 0 s set to 0")
    return AdapterResult(out, dropped, notes)


def mmsa_labels(
    label_csv: str | os.PathLike,
    *,
    path_template: str = "Raw/{video_id}/{clip_id}.mp4",
    label_column: str = "label",
    folds_json: str | os.PathLike | None = None,
    dataset: str | None = None,
) -> AdapterResult:
    """MMSA `label.csv` (video_id, clip_id, label, mode, ...) -> generic rows (regression)."""
    cols, rows = _read_csv(label_csv)
    _need(cols, ("video_id", "clip_id", label_column), "an MMSA label.csv", label_csv)
    folds = load_folds(folds_json, dataset or "mosi") if folds_json else None
    out, dropped = [], 0
    for r in rows:
        vid, clip = r["video_id"], r["clip_id"]
        split = folds.get(vid) if folds is not None else (r.get("mode") or "").lower() or None
        if split is None:
            dropped += 1
            continue
        out.append({
            "id": f"{vid}_{clip}",
            "path": path_template.format(video_id=vid, clip_id=clip, file=vid, index=clip),
            "label": float(r[label_column]),
            "split": canonical_split(split) or split,
            "group": vid,
        })
    return AdapterResult(out, dropped, [f"label column {label_column!r}", f"{dropped} rows in no split dropped"])


_SEGMENT_SUFFIX = re.compile(r"^(.*)_\d+$")


def _video_id(row: dict[str, Any], known: dict[str, str]) -> str | None:
    for key in ("video_id", "group", "speaker"):
        if row.get(key) and str(row[key]) in known:
            return str(row[key])
    stem = Path(str(row.get("path", ""))).stem
    if stem in known:
        return stem
    m = _SEGMENT_SUFFIX.match(stem)
    if m and m.group(1) in known:
        return m.group(1)
    parent = Path(str(row.get("path", ""))).parent.name
    return parent if parent in known else None


def apply_cmu_folds(
    labels_csv: str | os.PathLike, *, folds_json: str | os.PathLike, dataset: str
) -> AdapterResult:
    """A generic labels CSV -> the same rows with `split` from the CMU standard folds. The video
    id is taken from a `video_id`/`group`/`speaker` column, else from the file name (with a
    trailing `_<segment>` removed) or its folder. Rows whose video is in no fold are dropped."""
    cols, rows = _read_csv(labels_csv)
    _need(cols, ("path", "label"), "a generic labels CSV", labels_csv)
    folds = load_folds(folds_json, dataset)
    out, dropped = [], 0
    for r in rows:
        vid = _video_id(r, folds)
        if vid is None:
            dropped += 1
            continue
        new = dict(r)
        new["split"] = folds[vid]
        if not new.get("group"):  # missing or blank
            new["group"] = vid
        out.append(new)
    return AdapterResult(out, dropped, [f"split from the {dataset} standard folds; {dropped} rows in no fold dropped"])


# MELD / GoEmotions emotion names -> the default model's (the others are the same words)
SOURCE_EMOTION = {"joy": "happy", "anger": "angry", "sadness": "sad"}
MELD_COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def meld_labels(meld_csv: str | os.PathLike, *, split: str = "test") -> AdapterResult:
    """MELD's CSV -> text-only rows (id meld-<split>-<dialogue>-<utterance>, text, emotion,
    sentiment, split, speaker "meld"); one dialogue's utterances all in `split`."""
    cols, rows = _read_csv(meld_csv, fallback="cp1252")  # a copy saved by Windows tools
    _need(cols, MELD_COLUMNS, "MELD CSV", meld_csv)
    if canonical_split(split) is None:
        raise AdapterError(f"split must be train, valid or test, got {split!r}")
    split = canonical_split(split)
    out = [{"id": f"meld-{split}-{r['Dialogue_ID']}-{r['Utterance_ID']}", "text": r["Utterance"],
            "emotion": SOURCE_EMOTION.get(r["Emotion"], r["Emotion"]), "sentiment": r["Sentiment"],
            "split": split, "speaker": "meld"} for r in rows]
    return AdapterResult(rows=out, notes=[f"emotion names mapped: {SOURCE_EMOTION}"])


def write_generic_csv(result: AdapterResult, out: str | os.PathLike) -> Path:
    """Write the rows (atomically) with the generic columns first, in a stable order."""
    out = Path(out)
    columns = [c for c in GENERIC_COLUMNS if any(c in r for r in result.rows)]
    for r in result.rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for r in result.rows:
                writer.writerow({c: r.get(c, "") for c in columns})
    return out


def detect_format(labels_csv: str | os.PathLike) -> str:
    cols, _ = _read_csv(labels_csv)
    if {"file", "index", "label7", "split"} <= set(cols):
        return "mosei"
    if {"video_id", "clip_id"} <= set(cols):
        return "mmsa"
    if {"path", "label"} <= set(cols):
        return "generic"
    raise AdapterError(f"{labels_csv}: unknown label layout (columns {cols})")
