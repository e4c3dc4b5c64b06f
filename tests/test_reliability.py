"""Bad input and faults, as a user hits them (issue 11). The corpus is built here at run time
with the ffmpeg that imageio-ffmpeg ships. Every case checks the exit code, that no traceback
is printed, the message, and that nothing partial or orphaned is left behind.

The media is one 1 s clip (64x48, a tone): every full `analyze` after the first reads its
features from the session's extraction cache, since copies under other names hold the same bytes.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mfsa_pipe.cli import app
from mfsa_pipe.default_model import default_checkpoint_path

WIDE = {"COLUMNS": "1000"}  # rich wraps at the terminal width; paths are compared whole


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def clip(tmp_path_factory, ffmpeg) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "clip.mp4"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=16000", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def assert_clean_refusal(result, *phrases: str, code: int = 2) -> str:
    """Exit `code`, one line, no traceback, every phrase in it; returns the line."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text and not isinstance(result.exception, Exception), text
    assert text.strip().count("\n") == 0, f"more than one line:\n{text}"
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    return text.strip()


def leftovers(root: Path) -> list[Path]:
    """Temporary or partial files anywhere under `root`."""
    return [p for p in root.rglob("*") if ".partial" in p.name or p.name.startswith(".write-test")]


# ---- 1: text from outside the program is printed literally -------------------------------------

MARKUP = "q[/b]x[red]y:cat:"  # an unmatched closing tag ("q[" is a folder), a style, an emoji code
NAME_MARKUP = "v[red]x[b]:cat:"  # a file name cannot hold the closing tag's slash


@pytest.mark.integration
def test_analyze_prints_paths_with_markup_literally(clip, tmp_path, cache_dir):
    folder = tmp_path / f"in{MARKUP}"
    folder.mkdir(parents=True)
    video = folder / f"{NAME_MARKUP}.mp4"
    shutil.copy(clip, video)
    out = tmp_path / f"o{MARKUP}"
    result = cli("analyze", video, "--out", out, "--no-model", "--cache-dir", cache_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"{NAME_MARKUP}.mp4: 1.0 s" in result.output  # the name as given, not styled away
    assert f"{NAME_MARKUP}.annotated.mp4" in result.output and f"to {out} in" in result.output
    assert (out / "report.json").is_file() and not leftovers(tmp_path)

    missing = folder / f"missing{NAME_MARKUP}.mp4"
    line = assert_clean_refusal(cli("analyze", missing, "--out", tmp_path / "o2"), f"{missing}: no such file")
    assert line.startswith("error:")


@pytest.mark.integration
def test_batch_prints_paths_with_markup_literally(clip, tmp_path, cache_dir):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(clip, folder / "a.mp4")
    out = tmp_path / f"o{MARKUP}"
    result = cli("batch", folder, "--out", out, "--no-model", "--no-video", "--cache-dir", cache_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"Summary: {out / 'summary.csv'}" in result.output
    assert (out / "a" / "report.json").is_file() and not leftovers(tmp_path)

    nowhere = tmp_path / f"none{MARKUP}"
    assert_clean_refusal(cli("batch", nowhere, "--out", tmp_path / "o2"), f"{nowhere}: no such folder")
    assert not (tmp_path / "o2").exists()


def test_batch_reports_a_failed_video_with_markup_in_its_path_literally(tmp_path, cache_dir):
    folder = tmp_path / "videos"
    (folder / "q[" / "b]").mkdir(parents=True)
    broken = folder / "q[" / "b]" / f"{NAME_MARKUP}.mp4"
    broken.write_bytes(b"\x00not a video" * 50)
    result = cli("batch", folder, "--out", tmp_path / "o", "--no-model", "--cache-dir", cache_dir)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output  # one video failed
    assert f"failed q[/b]/{NAME_MARKUP}.mp4: " in result.output


@pytest.mark.integration
def test_extract_prints_paths_with_markup_literally(clip, tmp_path, cache_dir):
    video = tmp_path / f"{NAME_MARKUP}.mp4"
    shutil.copy(clip, video)
    out = tmp_path / f"f{MARKUP}.npz"
    out.parent.mkdir(parents=True)
    result = cli("extract", video, "--out", out, "--cache-dir", cache_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert video.name in result.output and str(out) in result.output
    assert out.is_file() and not leftovers(tmp_path)


def test_train_and_evaluate_print_paths_with_markup_literally(tmp_path):
    data = tmp_path / f"d{MARKUP}.pkl"
    data.parent.mkdir(parents=True)
    made = cli("make-synthetic", data, "--n-train", 16, "--n-valid", 8, "--n-test", 8, "--text-len", 6,
               "--audio-len", 8, "--vision-len", 8, "--text-dim", 8)
    assert made.exit_code == 0 and str(data) in made.output, made.output
    run = tmp_path / f"r{MARKUP}"
    small = ["--set", "hidden=4"]
    trained = cli("train", "--model", "lf_lstm", "--dataset", data, "--out", run, "--epochs", 1, "--quiet",
                  "--device", "cpu", *small)
    assert trained.exit_code == 0 and f"checkpoint {run / 'model.ckpt'}" in trained.output, trained.output
    scored = cli("evaluate", run / "model.ckpt", "--dataset", data, "--device", "cpu")
    assert scored.exit_code == 0 and "Traceback" not in scored.output, scored.output
    title = f"{data} [test, 8 samples, 1 checkpoint]"  # its brackets are text too; the table wraps it
    assert "".join(title.split()) in "".join(scored.output.split())

    missing = tmp_path / f"none{NAME_MARKUP}.ckpt"
    result = cli("evaluate", missing, "--dataset", data)
    assert result.exit_code == 2 and f"{missing}: no such checkpoint file" in result.output, result.output


@pytest.mark.slow  # ~20 s: the text rows load the word vectors
def test_build_dataset_prints_paths_with_markup_literally(tmp_path):
    media = tmp_path / f"m{MARKUP}"
    media.mkdir(parents=True)
    labels = tmp_path / "lab[x].csv"
    labels.write_text(f"path,text,label,split\n{NAME_MARKUP}.mp4,,positive,train\n,hello there,negative,train\n"
                      ",good day,positive,test\n,bad day,negative,valid\n")
    out = media / "d[red].h5"
    result = cli("build-dataset", labels, "--media-root", media, "--out", out, "--no-cache")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output  # one clip failed
    assert f"failed {NAME_MARKUP}.mp4: lab[x].csv line 2: media file not found: {media / NAME_MARKUP}.mp4" in result.output
    assert f"{out}: 3 added" in result.output and not leftovers(tmp_path)


def test_train_with_progress_prints_its_out_path_literally(tmp_path):
    data = tmp_path / "d.pkl"
    made = cli("make-synthetic", data, "--n-train", 16, "--n-valid", 8, "--n-test", 8, "--text-len", 6,
               "--audio-len", 8, "--vision-len", 8, "--text-dim", 8)
    assert made.exit_code == 0, made.output
    run = tmp_path / f"r{MARKUP}"
    trained = cli("train", "--model", "lf_lstm", "--dataset", data, "--out", run, "--epochs", 1, "--device", "cpu",
                  "--set", "hidden=4")
    assert trained.exit_code == 0 and "Traceback" not in trained.output, trained.output
    assert f"checkpoint: {run / 'model.ckpt'}" in trained.output


# ---- 3: temporary names fit wherever the final name fits ----------------------------------------

LONG_NAMES = {
    "ascii-236": "a" * 232 + ".mp4",  # 236 bytes
    "japanese-244": "日本語の長い題名" * 10 + ".mp4",  # 240 + 4 bytes
    "japanese-253": "あ" * 83 + ".mp4",  # <stem>.annotated.mp4 would be 263 bytes: shortened
}


@pytest.mark.integration
@pytest.mark.parametrize("label", LONG_NAMES)
def test_legal_long_names_analyse_completely(label, clip, tmp_path, cache_dir, monkeypatch):
    name = LONG_NAMES[label]
    shutil.copy(clip, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # the default output folder, ./<stem>_analysis, is long too
    result = cli("analyze", name, "--no-model", "--cache-dir", cache_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    (out,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    report = json.loads((out / "report.json").read_text())
    video = report["outputs"]["annotated_video"]
    assert (out / video).is_file() and video in result.output
    assert len(video.encode()) <= 255 and len(out.name.encode()) <= 255
    stem = Path(name).stem
    if len((stem + ".annotated.mp4").encode()) <= 255:
        assert video == stem + ".annotated.mp4" and out.name == stem + "_analysis"
    else:
        assert video.endswith(".annotated.mp4") and stem.startswith(video.removesuffix(".annotated.mp4"))
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("name", ["b" * 251 + ".mp4", "あ" * 83 + "ab.png", "x." + "y" * 253])
def test_atomic_writes_to_names_at_the_limit(name, tmp_path):
    from mfsa_pipe.atomic import atomic_path

    path = tmp_path / name  # 255 bytes each; the last has a 254-byte "suffix"
    assert len(name.encode()) == 255
    with atomic_path(path) as tmp:
        assert len(tmp.name.encode()) <= 255 and tmp.name.startswith(".") and ".partial" in tmp.name
        tmp.write_bytes(b"data")
    assert path.read_bytes() == b"data" and not leftovers(tmp_path)


def test_a_name_too_long_is_cut_between_characters():
    from mfsa_pipe.atomic import fit_name

    assert fit_name("日本" * 60, ".annotated.mp4") == "日本" * 40 + ".annotated.mp4"  # 254 bytes
    assert fit_name("short", ".annotated.mp4") == "short.annotated.mp4"


@pytest.mark.integration
def test_extract_to_a_long_name(clip, tmp_path, cache_dir):
    out = tmp_path / ("特徴" * 40 + ".npz")  # 244 bytes
    result = cli("extract", clip, "--out", out, "--cache-dir", cache_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert out.is_file() and not leftovers(tmp_path)


# ---- 4: an unusable device is refused before any work -------------------------------------------

def _unusable_device() -> str:
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.integration
@pytest.mark.parametrize("command", ["analyze", "batch", "extract", "evaluate", "train"])
def test_unusable_device_is_one_line_before_any_work(command, clip, tmp_path):
    device = _unusable_device()
    out = tmp_path / "out"
    args = {
        "analyze": ["analyze", clip, "--out", out],
        "batch": ["batch", clip.parent, "--out", out],
        "extract": ["extract", clip, "--out", out / "f.npz"],
        "evaluate": ["evaluate", "default", "--dataset", tmp_path / "not-read.h5"],
        "train": ["train", "--dataset", tmp_path / "not-read.h5", "--out", out],
    }[command]
    result = cli(*args, "--device", device)
    assert_clean_refusal(result, f"device {device!r} asked for")
    assert not out.exists()  # nothing made, nothing extracted


@pytest.mark.integration
def test_unknown_device_name_is_refused(clip, tmp_path):
    result = cli("analyze", clip, "--out", tmp_path / "o", "--device", "gpu0")
    assert_clean_refusal(result, "device 'gpu0' is not one of auto, cpu, cuda or cuda:N")
    assert not (tmp_path / "o").exists()


# ---- 5 and 8: malformed checkpoints are one line, and leave no --out folder ---------------------

class _RunsCode:
    """A pickle that would make a folder if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _variant(payload: dict, **changes) -> dict:
    data = dict(payload)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def _bad_checkpoints(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    good = torch.load(default_checkpoint_path(), map_location="cpu", weights_only=True)
    first = next(iter(good["state_dict"]))
    cases = {
        "five-byte text": (b"hello", "not a torch file"),
        "empty": (b"", "not a torch file"),
        "missing model_name": (_variant(good, model_name=None), "'model_name' is missing"),
        "normalization audio=1": (_variant(good, normalization={"audio": 1}), "'normalization' must map"),
        "format_version abc": (_variant(good, format_version="abc"), "'format_version' is 'abc'"),
        "newer format": (_variant(good, format_version=99), "newer than this mfsa-pipe reads"),
        "unknown model": (_variant(good, model_name="nosuch"), "unknown model 'nosuch'"),
        "label_spec without task": (_variant(good, label_spec="{}"), "'label_spec' is not usable"),
        "heads without classes": (_variant(good, label_spec=json.dumps({"task": "multihead", "heads": [{"name": "x"}]})),
                                  "needs a name and >= 2 distinct classes"),
        "feature_spec of numbers": (_variant(good, feature_spec=json.dumps({"text": 1})), "one object per modality"),
        "model_config a list": (_variant(good, model_config="[1]"), "'model_config' holds a JSON list"),
        "no weights": (_variant(good, state_dict=None), "'state_dict' is missing"),
        "weights of the wrong shape": (_variant(good, state_dict={**good["state_dict"], first: torch.zeros(1)}),
                                       "weights do not fit"),
        "negative temperature": (_variant(good, calibration=json.dumps({"temperature": {"emotion": -1}})),
                                 "temperatures must be positive"),
        "code in the pickle": ({"format": "mfsa-pipe-checkpoint", "x": _RunsCode(root / "ran")},
                               "refused, as loading it could run code"),
    }
    files = {}
    for i, (name, (content, phrase)) in enumerate(cases.items()):
        path = root / f"bad{i}.ckpt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        files[name] = (path, phrase)
    return files


@pytest.mark.integration
def test_malformed_checkpoints_are_one_line_and_leave_no_out_folder(clip, tmp_path):
    for name, (path, phrase) in _bad_checkpoints(tmp_path).items():
        out = tmp_path / "new" / "out"
        line = assert_clean_refusal(cli("analyze", clip, "--checkpoint", path, "--out", out), str(path), phrase)
        assert "weights_only" not in line, (name, line)
        assert not (tmp_path / "new").exists(), name  # not even the parent it would have made
    assert not (tmp_path / "ran").exists()  # the pickle's code never ran


@pytest.mark.integration
def test_malformed_checkpoint_in_evaluate_and_batch(clip, tmp_path):
    bad = _bad_checkpoints(tmp_path)
    path, phrase = bad["format_version abc"]
    assert_clean_refusal(cli("evaluate", path, "--dataset", tmp_path / "not-read.h5"), str(path), phrase)
    path, phrase = bad["weights of the wrong shape"]
    assert_clean_refusal(cli("batch", clip.parent, "--checkpoint", path, "--out", tmp_path / "o"), str(path), phrase)
    assert not (tmp_path / "o").exists()  # refused once, up front, not once per video


# ---- 8: still images, Ctrl-C ------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_still_image_is_refused(suffix, ffmpeg, tmp_path):
    image = tmp_path / f"photo{suffix}"
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1",
                    str(image)], check=True)
    result = cli("analyze", image, "--out", tmp_path / "o", "--no-model")
    assert_clean_refusal(result, f"{image}: is a still image", "not a video")
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_ctrl_c_says_interrupted_and_replays_no_native_logs(clip, tmp_path, monkeypatch, capfd):
    import extractors.pipeline

    def interrupted_extraction(*args, **kwargs):
        os.write(2, b"W0000 00:00:1 inference_feedback_manager.cc: native log line\n")  # as MediaPipe logs
        raise KeyboardInterrupt

    monkeypatch.setattr(extractors.pipeline, "extract", interrupted_extraction)
    out = tmp_path / "a" / "out"
    result = cli("analyze", clip, "--out", out, "--no-model")
    assert_clean_refusal(result, "interrupted", code=130)
    assert "native log line" not in result.output + capfd.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing was written: the folders it made are gone


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_ctrl_c_during_extraction(tmp_path):
    """SIGINT to a running `analyze`, as a terminal's Ctrl-C sends it, in the middle of extraction."""
    import signal
    import sys
    import time

    out = tmp_path / "a" / "out"
    video = Path(__file__).resolve().parent.parent / "examples" / "media" / "single_face.mp4"
    run = subprocess.Popen(
        [sys.executable, "-m", "mfsa_pipe.cli", "analyze", str(video), "--out", str(out), "--no-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell job ignores it
    )
    try:
        while not out.exists() and run.poll() is None:  # made once the checks have passed
            time.sleep(0.1)
        time.sleep(3)  # into the extraction (its models load for seconds)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, stdout + stderr
    assert stderr.strip().startswith("interrupted") and stderr.strip().count("\n") == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert not (tmp_path / "a").exists()  # stopped before writing anything: the folders it made are gone
