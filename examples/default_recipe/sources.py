"""The recipe's data: label CSVs written from ../shared/emo, the datasets built from them with the
default extractors, and the samples loaded back as one dict (`load_all`)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from default_recipe.progress import log
from default_recipe.settings import EMOTION_SENTIMENT, EXTRACTION, HEADS
from mfsa_pipe.datasets.label_adapters import SOURCE_EMOTION  # MELD / GoEmotions names -> ours


def fix_text(text: str) -> str:
    """MELD's mis-encoded punctuation (cp1252 bytes read as Latin-1) back to ASCII: the tokeniser's
    own rule (`normalize_punctuation`), applied here too so the labels CSVs store the clean text."""
    from extractors.vectors import normalize_punctuation

    return normalize_punctuation(text).strip()


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def meld_rows(emo: Path, file: str, split: str) -> list[dict]:
    """`mfsa-pipe labels-from-meld`'s rows, their text stored cleaned."""
    from mfsa_pipe.datasets.label_adapters import meld_labels

    return [{**r, "text": fix_text(r["text"])} for r in meld_labels(emo / "meld" / file, split=split).rows]


def goemotions_rows(emo: Path, file: str, split: str) -> list[dict]:
    """Rows with one Ekman emotion and/or one sentiment (several, or 'ambiguous': that head is blank)."""
    names = {h: (emo / "goemotions" / h / "labels.txt").read_text().split() for h in ("ekman", "sentiment")}
    read = lambda h: [line.rstrip("\n").split("\t") for line in (emo / "goemotions" / h / file).open(encoding="utf-8")]  # noqa: E731
    rows = []
    for (text, e_ids, cid), (_, s_ids, _) in zip(read("ekman"), read("sentiment")):
        e, s = e_ids.split(","), s_ids.split(",")
        emotion = SOURCE_EMOTION.get(names["ekman"][int(e[0])], names["ekman"][int(e[0])]) if len(e) == 1 else ""
        sentiment = names["sentiment"][int(s[0])] if len(s) == 1 else ""
        sentiment = "" if sentiment == "ambiguous" else sentiment
        if (emotion or sentiment) and fix_text(text):
            rows.append({"id": f"goemo-{split}-{cid}", "text": fix_text(text), "emotion": emotion,
                         "sentiment": sentiment, "split": split, "speaker": "goemotions"})
    return rows


def javanese_rows(emo: Path, folder: str, modalities: str) -> list[dict]:
    rows = []
    with (emo / folder / "labels.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.append({"id": f"{folder}/{Path(r['path']).stem}", "path": r["path"], "emotion": r["label"],
                         "sentiment": EMOTION_SENTIMENT.get(r["label"], ""), "split": "train",
                         "speaker": r["speaker"], "modalities": modalities})
    return rows


def crema_rows(emo: Path) -> list[dict]:
    rows = []
    with (emo / "crema_d" / "labels.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            path = r["path"]
            if path.startswith("flv/"):  # the H.264 re-encode of the same clip
                path = "mp4/" + Path(path).stem + ".mp4"
            rows.append({"id": path, "path": path, "emotion": r["label"], "sentiment": EMOTION_SENTIMENT.get(r["label"], ""),
                         "split": "test", "speaker": r["speaker"],
                         "modalities": "text+audio+vision" if path.startswith("mp4/") else "text+audio"})
    return rows


def build_all(args) -> dict:
    from extractors.config import ExtractionConfig
    from mfsa_pipe.datasets.build import build_dataset

    emo, work = args.emo, args.work
    text = meld_rows(emo, "train_sent_emo.csv", "train") + goemotions_rows(emo, "train.tsv", "train")
    text += goemotions_rows(emo, "dev.tsv", "valid") + meld_rows(emo, "dev_sent_emo.csv", "test")
    if args.quick:
        text = [r for i, r in enumerate(text) if i % 20 == 0][:3000]
    voice = javanese_rows(emo, "javanese_audio", "audio")
    if args.quick:  # take 01 only: the same recordings as the AV clips
        voice = [r for r in voice if r["id"].endswith("_01")]
    cols = ["id", "text", "emotion", "sentiment", "split", "speaker"]
    media_cols = cols[:1] + ["path"] + cols[2:] + ["modalities"]
    jobs = {
        "text": (_write_csv(work / "labels" / "text.csv", text, cols), emo),
        "voice": (_write_csv(work / "labels" / "voice.csv", voice, media_cols),
                  emo / "javanese_audio"),
        "av": (_write_csv(work / "labels" / "av.csv", javanese_rows(emo, "javanese_av", "audio+vision"), media_cols),
               emo / "javanese_av"),
        "crema": (_write_csv(work / "labels" / "crema.csv", crema_rows(emo), media_cols), emo / "crema_d"),
    }
    out = {}
    for name, (labels, root) in jobs.items():
        t0 = time.perf_counter()
        report = build_dataset(labels, media_root=root, out=work / f"{name}.h5", cache_dir=args.cache, heads=HEADS,
                               config=ExtractionConfig.from_dict(EXTRACTION),
                               workers=args.jobs if name != "text" else 1,
                               progress=lambda d, n, m: (d % 200 == 0 or d == n) and log(f"build {name} {d}/{n}"))
        out[name] = {"rows": report.total, "failed": report.failed, "seconds": round(time.perf_counter() - t0, 1),
                     "failures": [f.get("error") for f in report.failures][:20]}
        log(f"dataset {name}: {report.total} rows, {report.failed} failed ({out[name]['seconds']} s)")
        # a sentence of punctuation only (a few GoEmotions comments such as ":^(") has no word;
        # any media failure is a real problem
        if report.failed and (name != "text" or report.failed > 0.001 * report.total):
            raise SystemExit(f"{report.failed} rows of {labels} failed; see {report.report_json}")
    return out


def load(path: Path):
    """(bundle, {split: [Sample]}). Reading 56k samples one by one from HDF5 takes minutes: the
    samples are kept beside the dataset in a pickle of our own (keyed on the file's size: a
    resumed build rewrites the mtime, not the content; only ever written and read by this script)."""
    import pickle

    from mfsa_pipe.datasets import open_dataset

    bundle = open_dataset(path)
    stat = path.stat()
    cached = path.with_suffix(f".{stat.st_size}.samples.pkl")
    if cached.is_file():
        with cached.open("rb") as fh:
            return bundle, pickle.load(fh)
    samples = {name: [split[i] for i in range(len(split))] for name, split in bundle.splits.items()}
    with cached.open("wb") as fh:
        pickle.dump(samples, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return bundle, samples


def load_all(work: Path) -> dict:
    """The built datasets' samples: text (its splits), voice_all, av_all, crema, and the feature and
    label specs (the same for all four: one extraction)."""
    bundle, text = load(work / "text.h5")
    data = {"text": text, "feature_spec": bundle.feature_spec, "label_spec": bundle.label_spec,
            "text_path": work / "text.h5"}
    for name in ("voice", "av", "crema"):
        _, splits = load(work / f"{name}.h5")
        data[f"{name}_all" if name != "crema" else name] = sorted((s for v in splits.values() for s in v),
                                                                   key=lambda s: s.id)
    log(f"text {[(k, len(v)) for k, v in text.items()]}, voice {len(data['voice_all'])}, av {len(data['av_all'])}")
    return data
