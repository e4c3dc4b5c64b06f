"""The labels table of `build-dataset`: a CSV read into checked rows (`Row`), its label spec and
the split of each row. Problems of the whole table raise `LabelsError`; a bad row is recorded by the build.

One CSV row per sample (see docs/build_dataset.md):

- ``path``: the media file (video or audio), relative to ``media_root`` (absolute paths work too);
- ``text`` (optional column): a row with ``text`` and no ``path`` is a **text-only** sample: its
  words (split on whitespace) go through the same cleaning, vectors and out-of-vocabulary rule as
  the words the speech recogniser returns in ``analyze`` (``extractors.text.words_to_sequence``),
  each word given ``build.TEXT_WORD_SECONDS`` (0.3 s) in turn; audio and vision are empty. On a row
  with a ``path`` the text is only kept in ``meta`` (the words come from the recogniser);
- ``modalities`` (optional): e.g. ``audio``, ``audio+video``, ``text+audio+vision`` ("video"
  means vision): only those are extracted for the row (no speech recognition unless text is
  asked for), the others are stored empty; blank = all three (text for a text-only row);
- ``start`` / ``end`` (optional, seconds): a segment of a longer file. The whole file is
  extracted once (the pipeline caches by content hash + configuration) and every Sequence is
  sliced by time with the row rule ``analyze`` uses for utterances
  (``mfsa_pipe.segmentation.row_utterance_index``: a row belongs to the segment when its
  midpoint lies in ``[start, end]``, or, straddling a boundary, within 0.25 s of it); its times
  are shifted so that the segment starts at 0, as if the segment were a clip of its own. Rows
  are never interpolated;
- the label, one of:
  ``label``: a number (every row) -> regression, otherwise class names -> classification
  (classes sorted by name unless ``classes`` is given); or
  ``emotion`` and/or ``sentiment`` (either may be blank on a row, not both) -> a **multihead**
  label spec with heads in the order emotion, sentiment (classes from ``heads``, else the sorted
  names seen); a sample's label is then an int64 array (H,), -1 where a head is blank.
  The label spec is recorded in the dataset;
- ``split`` (optional): train / valid / test (``val``, ``validation``, ``dev`` mean valid);
- ``speaker`` or ``group`` (optional): who is in the clip. Without a split column, whole groups
  are assigned to splits (groups sorted by the SHA-256 of their name, then ~70/15/15, at least
  one group in valid and test when there are 3 groups or more), so a speaker is never in two
  splits; without groups the same rule is applied to clips;
- ``id`` (optional): the sample id; default ``path`` (``path@start-end`` for segments), and
  ``<labels file name>:<line>`` for a text-only row.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from extractors.errors import UserError
from extractors.sequence import MODALITIES
from mfsa_pipe.datasets.base import LabelHead, LabelSpec, canonical_split

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
HEAD_COLUMNS = ("emotion", "sentiment")  # multihead label columns, in head order


class LabelsError(UserError, ValueError):
    """The labels CSV is unusable: the message says which row/column and what is expected."""


# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    path: str  # as written in the CSV ("" for a text-only row)
    file: Path | None  # resolved media file (None for a text-only row)
    label: Any  # str (class name or number as written), or {head: name | None} (multihead)
    split: str | None
    group: str | None
    start: float | None = None
    end: float | None = None
    line: int = 0  # 1-based CSV line (header = 1)
    extra: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # the `text` column
    modalities: tuple[str, ...] = MODALITIES  # what is extracted for this row
    error: str | None = None  # a problem of this row only: recorded as failed, not built

    @property
    def text_only(self) -> bool:
        return self.file is None


@dataclass
class LabelsTable:
    """What `read_table` found: the rows (some may carry a row error) and the label columns."""

    rows: list[Row]
    columns: list[str]
    head_columns: tuple[str, ...]  # () for the single `label` column

    @property
    def multihead(self) -> bool:
        return bool(self.head_columns)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _as_float(value: Any) -> float | None:
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


def row_location(labels_csv: Path, line: int) -> str:
    """Where a row is, as messages name it."""
    return f"{labels_csv.name} line {line}"


def read_labels(labels_csv: str | os.PathLike, *, media_root: str | os.PathLike) -> list[Row]:
    """Parse and validate the generic labels CSV (see the module docstring). Rows with a problem
    of their own carry it in `Row.error`; problems of the whole table raise `LabelsError`."""
    return read_table(labels_csv, media_root=media_root).rows


def read_table(labels_csv: str | os.PathLike, *, media_root: str | os.PathLike) -> LabelsTable:
    """`read_labels`, plus which label columns the table has."""
    labels_csv = Path(labels_csv)
    media_root = Path(media_root)
    columns, raw_rows = _read_csv(labels_csv)
    header = _check_columns(labels_csv, columns)
    rows = [_parse_row(r, line=i + 2, labels_csv=labels_csv, media_root=media_root, header=header)
            for i, r in enumerate(raw_rows)]  # line 1 is the header
    _check_rows(labels_csv, rows, columns)
    return LabelsTable(rows=rows, columns=columns, head_columns=header.head_columns)


@dataclass(frozen=True)
class _Header:
    """What the CSV's columns say about how to read every row."""

    columns: list[str]
    head_columns: tuple[str, ...]  # () for the single `label` column
    group_column: str | None  # "group", else "speaker"


_KNOWN_COLUMNS = {"id", "path", "label", "split", "start", "end", "group", "speaker", "text", "modalities",
                  *HEAD_COLUMNS}  # the rest go to a sample's meta


def _read_csv(labels_csv: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows as {column: value}), names stripped; utf-8-sig drops Excel's BOM."""
    if not labels_csv.is_file():
        raise LabelsError(f"labels file not found: {labels_csv}")
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        raw_rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    return columns, raw_rows


def _check_columns(labels_csv: Path, columns: list[str]) -> _Header:
    """The header's problems raise `LabelsError` (they concern every row)."""
    if "path" not in columns and "text" not in columns:
        raise LabelsError(
            f"{labels_csv}: a column named 'path' is required (media files), or 'text' for text-only rows "
            f"(found columns: {columns}); see docs/build_dataset.md"
        )
    head_columns = tuple(c for c in HEAD_COLUMNS if c in columns)
    if "label" not in columns and not head_columns:
        raise LabelsError(
            f"{labels_csv}: a column named 'label' is required, or 'emotion' and/or 'sentiment' "
            f"(found columns: {columns}); see docs/build_dataset.md"
        )
    if "label" in columns and head_columns:
        raise LabelsError(
            f"{labels_csv}: has both 'label' and {list(head_columns)}: use 'label' (one target) or "
            "'emotion'/'sentiment' (one head each), not both"
        )
    if ("start" in columns) != ("end" in columns):
        raise LabelsError(f"{labels_csv}: 'start' and 'end' go together (found only one of them)")
    group_column = "group" if "group" in columns else ("speaker" if "speaker" in columns else None)
    return _Header(columns=columns, head_columns=head_columns, group_column=group_column)


def _parse_row(r: dict[str, Any], *, line: int, labels_csv: Path, media_root: Path, header: _Header) -> Row:
    """One CSV row as a `Row`. Its own problems go to `Row.error` (the first found) so that the
    build records and skips it; a malformed start/end or split raises (the table is wrong)."""
    where = row_location(labels_csv, line)
    errors: list[str] = []
    path = (r.get("path") or "").strip()
    text = r.get("text")
    text = None if _blank(text) else str(text).strip()
    if not path and text is None:
        errors.append(
            f"{where}: no 'path' and no 'text': a row needs a media file in 'path', or the words of a "
            "text-only sample in 'text'" if "text" in header.columns else f"{where}: empty 'path'"
        )
    label, label_error = _row_label(r, header=header, where=where)
    start, end, segment_error = _row_segment(r, header=header, path=path, labels_csv=labels_csv, line=line)
    split = _row_split(r, header=header, labels_csv=labels_csv, line=line)
    group = None
    if header.group_column and not _blank(r.get(header.group_column)):
        group = str(r[header.group_column]).strip()
    modalities, modalities_error = _row_modalities(r, path=path, where=where)
    errors += [e for e in (label_error, segment_error, modalities_error) if e is not None]
    sample_id = (r.get("id") or "").strip()
    if not sample_id:
        if path:
            sample_id = path if start is None else f"{path}@{_fmt_time(start)}-{_fmt_time(end)}"
        else:
            sample_id = f"{labels_csv.name}:{line}"
    file = None if not path else (Path(path) if Path(path).is_absolute() else media_root / path)
    extra = {k: v for k, v in r.items() if k not in _KNOWN_COLUMNS and k and v is not None}
    return Row(sample_id, path, file, label, split, group, start, end, line, extra,
               text=text, modalities=modalities, error=errors[0] if errors else None)


def _row_label(r: dict[str, Any], *, header: _Header, where: str) -> tuple[Any, str | None]:
    """(label, error): a class name or number as written, or {head: name | None} (multihead)."""
    if header.head_columns:
        label: Any = {h: (None if _blank(r.get(h)) else str(r[h]).strip()) for h in header.head_columns}
        if all(v is None for v in label.values()):
            return label, (f"{where}: no label: {' and '.join(repr(h) for h in header.head_columns)} "
                           f"{'are both' if len(header.head_columns) > 1 else 'is'} blank")
        return label, None
    label = None if _blank(r.get("label")) else str(r["label"]).strip()
    return label, (f"{where}: empty 'label'" if label is None else None)


def _row_segment(r: dict[str, Any], *, header: _Header, path: str, labels_csv: Path,
                 line: int) -> tuple[float | None, float | None, str | None]:
    """(start, end, error); both None for the whole file (no columns, or both blank)."""
    if "start" not in header.columns or (_blank(r.get("start")) and _blank(r.get("end"))):
        return None, None, None
    start, end = _as_float(r.get("start")), _as_float(r.get("end"))
    if start is None or end is None or start < 0 or end <= start:
        raise LabelsError(
            f"{labels_csv}:{line}: start/end must be seconds with 0 <= start < end, "
            f"got {r.get('start')!r}/{r.get('end')!r}"
        )
    if not path:
        return start, end, (f"{row_location(labels_csv, line)}: start/end given without a media 'path' "
                            "(a text-only row has no time)")
    return start, end, None


def _row_split(r: dict[str, Any], *, header: _Header, labels_csv: Path, line: int) -> str | None:
    if "split" not in header.columns or _blank(r.get("split")):
        return None
    split = canonical_split(r["split"])
    if split is None:
        raise LabelsError(f"{labels_csv}:{line}: split must be one of train/valid/test, got {r['split']!r}")
    return split


def _row_modalities(r: dict[str, Any], *, path: str, where: str) -> tuple[tuple[str, ...], str | None]:
    """(modalities, error): blank = all three, or text alone for a row without a media file."""
    from extractors.pipeline import parse_modalities  # lazy: the pipeline loads PyAV (FFmpeg)

    modalities = MODALITIES if path else ("text",)
    if _blank(r.get("modalities")):
        return modalities, None
    try:
        modalities = parse_modalities(str(r["modalities"]))
    except ValueError as exc:
        return modalities, f"{where}: {exc}"
    if not path and modalities != ("text",):
        return modalities, (f"{where}: modalities {'+'.join(modalities)!r} need a media 'path'; "
                            "a row without one can only be text")
    return modalities, None


def _check_rows(labels_csv: Path, rows: list[Row], columns: list[str]) -> None:
    """The whole table's problems: no rows, a duplicated id, a split column filled on some rows only."""
    if not rows:
        raise LabelsError(f"{labels_csv}: no rows")
    seen: dict[str, int] = {}
    for row in rows:
        if row.id in seen:
            raise LabelsError(
                f"{labels_csv}: sample id {row.id!r} appears on lines {seen[row.id]} and {row.line}; "
                "give an 'id' column or distinct start/end"
            )
        seen[row.id] = row.line
    if "split" in columns:
        missing = [row.line for row in rows if row.split is None]
        if missing and len(missing) < len(rows):
            raise LabelsError(
                f"{labels_csv}: the split column is empty on lines {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; fill it on every row or drop the column"
            )


def infer_label_spec(
    labels: Iterable[str], *, task: str | None = None, classes: list[str] | None = None
) -> LabelSpec:
    """Numbers on every row -> regression (range = [min, max] of the labels); otherwise
    classification over the distinct names (sorted, or in the order of `classes`)."""
    labels = [str(x).strip() for x in labels]
    numbers = [_as_float(x) for x in labels]
    if task is None:
        task = "regression" if all(n is not None for n in numbers) and classes is None else "classification"
    if task == "regression":
        bad = [x for x, n in zip(labels, numbers) if n is None]
        if bad:
            raise LabelsError(f"regression labels must be numbers; not numbers: {sorted(set(bad))[:10]}")
        if not numbers:
            raise LabelsError("no usable label: every row has a problem (see the report)")
        lo, hi = min(numbers), max(numbers)
        return LabelSpec(task="regression", range=(float(lo), float(hi)))
    if task != "classification":
        raise LabelsError(f"task must be 'regression' or 'classification', got {task!r}")
    found = sorted(set(labels))
    if classes is None:
        classes = found
    else:
        classes = [str(c) for c in classes]
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise LabelsError(f"labels {unknown} are not among the given classes {classes}")
    if len(classes) < 2:
        raise LabelsError(f"classification needs at least 2 classes, found {classes}")
    return LabelSpec(task="classification", classes=tuple(classes))


def infer_heads_spec(
    labels: Iterable[dict[str, str | None]], *, head_columns: Iterable[str] = HEAD_COLUMNS,
    heads: dict[str, list[str]] | None = None,
) -> LabelSpec:
    """The multihead label spec: one head per column of `head_columns` and per name of `heads`,
    in the order emotion, sentiment; a head's classes are `heads[name]` when given, else the
    sorted names seen in its column."""
    heads = {str(k): [str(c).strip() for c in v] for k, v in (heads or {}).items()}
    unknown = sorted(set(heads) - set(HEAD_COLUMNS))
    if unknown:
        raise LabelsError(f"unknown head(s) {unknown}: the heads are {list(HEAD_COLUMNS)}")
    labels = list(labels)
    names = [h for h in HEAD_COLUMNS if h in set(head_columns) or h in heads]
    out = []
    for name in names:
        classes = heads.get(name)
        if classes is None:
            classes = sorted({lab[name] for lab in labels if lab.get(name) is not None})
            hint = f" (give them: --{name}-classes a,b,c)"
        else:
            hint = ""
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise LabelsError(f"head {name!r} needs at least 2 distinct classes, found {classes}{hint}")
        out.append(LabelHead(name=name, classes=tuple(classes)))
    return LabelSpec(task="multihead", heads=tuple(out))


def encode_label(label: Any, label_spec: LabelSpec) -> Any:
    """The stored label: a float (regression), class index (classification), or (H,) int64 class
    indices, -1 = blank (multihead). Raises KeyError naming the allowed names for an unknown one."""
    if label_spec.is_regression:
        return float(label)
    if label_spec.task == "multihead":
        return label_spec.encode_heads(label)
    if label not in label_spec.classes:
        raise KeyError(f"label {label!r} is not one of {list(label_spec.classes)}")
    return int(label_spec.classes.index(label))


def label_spec_for(
    table: LabelsTable, *, task: str | None = None, classes: list[str] | None = None,
    heads: dict[str, list[str]] | None = None, labels_csv: str | os.PathLike = "",
) -> tuple[LabelSpec, dict[str, Any]]:
    """(label spec, {row id: encoded label}) for the table's rows without an error. A row whose
    label is not among the given classes gets a row error naming its line and the allowed names."""
    usable = [r for r in table.rows if r.error is None]
    if table.multihead:
        if task not in (None, "multihead"):
            raise LabelsError(f"the emotion/sentiment columns make a multihead label spec; --task {task} does not apply")
        if classes is not None:
            raise LabelsError("--classes applies to the 'label' column; give the heads' classes instead "
                              "(--emotion-classes, --sentiment-classes)")
        spec = infer_heads_spec([r.label for r in usable], head_columns=table.head_columns, heads=heads)
    else:
        if heads:
            raise LabelsError(f"head classes {sorted(heads)} given, but the labels CSV has no emotion/sentiment column")
        if classes is not None:
            classes = [str(c) for c in classes]
            for r in usable:
                if r.label not in classes:
                    r.error = f"{row_location(Path(labels_csv), r.line)}: label {r.label!r} is not one of {classes}"
            usable = [r for r in usable if r.error is None]
        spec = infer_label_spec([r.label for r in usable], task=task, classes=classes)
    encoded = {}
    for r in usable:
        try:
            encoded[r.id] = encode_label(r.label, spec)
        except KeyError as exc:
            r.error = f"{row_location(Path(labels_csv), r.line)}: {exc.args[0]}"
    return spec, encoded


def _hash_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def deterministic_split(names: Iterable[str], fractions=SPLIT_FRACTIONS) -> dict[str, str]:
    """Assign each name (a group, or a clip id) to train/valid/test: names sorted by the
    SHA-256 of the name (stable across machines and row orders), then the first ~70% to
    train, the next ~15% to valid, the rest to test; valid and test get at least one name
    each when there are 3 names or more."""
    names = sorted(set(names), key=lambda n: (_hash_key(n), n))
    n = len(names)
    if n < 3:
        return {name: "train" for name in names}
    n_valid = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_valid - n_test
    if n_train < 1:
        n_train, n_valid, n_test = 1, 1, n - 2
    out = {}
    for i, name in enumerate(names):
        out[name] = "train" if i < n_train else ("valid" if i < n_train + n_valid else "test")
    return out


def assign_splits(rows: list[Row]) -> str:
    """Fill `split` where the CSV has none; returns the rule used (recorded in provenance)."""
    if all(r.split is not None for r in rows):
        return "from the labels CSV's split column"
    if any(r.group is not None for r in rows):
        groups = {r.group if r.group is not None else f"__clip__:{r.id}" for r in rows}
        table = deterministic_split(groups)
        for r in rows:
            r.split = table[r.group if r.group is not None else f"__clip__:{r.id}"]
        return "by speaker/group: groups sorted by SHA-256 of the name, ~70/15/15 train/valid/test"
    table = deterministic_split([r.id for r in rows])
    for r in rows:
        r.split = table[r.id]
    return "by clip: sample ids sorted by SHA-256, ~70/15/15 train/valid/test"
