"""examples/analyze_clip.py, the Python API example, run as a user runs it (the shipped default model)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "analyze_clip.py"


def run_example(clip, out, cache_dir):
    env = {**os.environ, "MFSA_PIPE_CACHE": str(cache_dir)}
    done = subprocess.run([sys.executable, str(EXAMPLE), str(clip), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_grid_clip_prints_both_heads_and_each_modality(media_dir, tmp_path, cache_dir):
    lines = run_example(media_dir / "grid_id2_vcd_swwp2s.mpg", tmp_path / "grid", cache_dir)
    (utterance,) = [line for line in lines if " s  " in line]
    assert "sentiment " in utterance and "alone: T " in utterance and " A " in utterance and " V " in utterance
    assert "'Set white with P2 soon.'" in utterance  # the words as Whisper wrote them
    assert lines[-1].startswith(f"outputs in {tmp_path / 'grid'}/: report.json")
    assert (tmp_path / "grid" / "report.json").is_file() and (tmp_path / "grid" / "timeline.png").is_file()


def test_a_span_without_anything_to_read_says_so(media_dir, tmp_path, cache_dir):
    lines = run_example(media_dir / "face_noface.mov", tmp_path / "fnf", cache_dir)
    spans = [line for line in lines if " s  " in line]
    assert len(spans) == 2 and "sentiment positive" in spans[0] and "no prediction" in spans[1]
