"""The error policy of every command (mfsa_pipe/commands/console.py): a UserError is one
`error: ...` line and its exit code, Ctrl-C is `interrupted: ...` and 130, anything else a bug
with its full traceback."""

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

import mfsa_pipe.training.evaluation
import mfsa_pipe.training.trainer
from extractors.errors import SetupError, UserError
from mfsa_pipe.cli import app
from mfsa_pipe.training.synthetic import write_synthetic

TINY_DATA = dict(n_train=8, n_valid=4, n_test=4, text_len=6, audio_len=8, vision_len=8, text_dim=8)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "small.pkl", **TINY_DATA)


def train_args(small, out, *extra):
    return ["train", "--model", "lf_lstm", "--dataset", str(small), "--out", str(out), "--epochs", "1",
            "--batch-size", "4", "--device", "cpu", "--set", "hidden=4", "--quiet", *extra]


def assert_one_error_line(res, *, code=2, says=""):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no exception but the exit
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and res.output.rstrip().endswith(errors[0]), res.output
    assert says in errors[0], res.output


@pytest.mark.parametrize("args, says", [
    (["extract", "{tmp}/nope.mp4", "--out", "{tmp}/f.npz"], "nope.mp4: no such file"),
    (["analyze", "{tmp}/nope.mp4", "--no-model"], "nope.mp4: no such file"),
    (["batch", "{tmp}/nodir", "--out", "{tmp}/o", "--no-model"], "nodir: no such folder"),
    (["train", "--model", "nosuch", "--dataset", "{tmp}/d.pkl", "--out", "{tmp}/t"], "unknown model 'nosuch'"),
    (["evaluate", "{tmp}/nope.ckpt", "--dataset", "{tmp}/d.pkl"], "nope.ckpt: no such checkpoint file"),
    (["make-synthetic", "{tmp}/s.pkl", "--task", "bogus"], "task must be 'regression' or 'classification'"),
    (["build-dataset", "{tmp}/nope.csv", "--media-root", "{tmp}", "--out", "{tmp}/d.h5"], "labels file not found"),
    (["labels-from-cmu", "{tmp}/nope.csv", "--out", "{tmp}/l.csv"], "label file not found"),
])
def test_a_user_error_in_each_command_is_one_line_exit_2(args, says, tmp_path):
    res = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args], env={"COLUMNS": "1000"})
    assert_one_error_line(res, says=says)


def test_error_messages_are_printed_literally(tmp_path):
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "[bold]x[/bold] :cat:.mp4")], env={"COLUMNS": "1000"})
    assert_one_error_line(res, says="[bold]x[/bold] :cat:.mp4: no such file")


def test_bad_model_settings_from_set_are_user_errors(small, tmp_path):
    res = CliRunner().invoke(app, train_args(small, tmp_path / "a", "--set", "hidden=-1"), env={"COLUMNS": "1000"})
    assert_one_error_line(res, says="bad model setting for 'lf_lstm': hidden must be a positive int, got -1")
    res = CliRunner().invoke(app, ["train", "--model", "mfsa", "--dataset", str(small), "--out", str(tmp_path / "b"),
                                   "--set", "positional=learned", "--set", "max_len=7"], env={"COLUMNS": "1000"})
    assert_one_error_line(res, says="sequences of 8 rows, longer than the learned positional table (max_len 7)")
    assert not (tmp_path / "b" / "last.ckpt").exists()


def test_a_bug_inside_training_is_not_shown_as_a_user_error(small, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug deep in training")

    monkeypatch.setattr(mfsa_pipe.training.trainer, "train_one_epoch", bug)
    res = CliRunner().invoke(app, train_args(small, tmp_path / "out"))
    assert res.exit_code == 1 and isinstance(res.exception, ValueError), res.output
    assert "error:" not in res.output.lower()


def test_a_bug_inside_evaluation_is_not_shown_as_a_user_error(small, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug deep in evaluation")

    monkeypatch.setattr(mfsa_pipe.training.evaluation, "resolve_device", bug)  # the first thing evaluate() does
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "model.ckpt"), "--dataset", str(small)])
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError), res.output
    assert "error:" not in res.output.lower()


def test_a_bug_prints_its_full_traceback(small, tmp_path):
    """As a user sees it: the process's stderr holds the traceback down to the failing function."""
    script = textwrap.dedent(f"""
        import sys
        import torch
        import mfsa_pipe.training.trainer as trainer
        from mfsa_pipe.cli import main

        torch.set_num_threads(1)
        def train_one_epoch(*args, **kwargs):
            raise ValueError("a bug deep in training")
        trainer.train_one_epoch = train_one_epoch
        sys.argv = ["mfsa-pipe"] + {train_args(small, tmp_path / "out")!r}
        main()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "Traceback (most recent call last)" in run.stderr and "in train_one_epoch" in run.stderr
    assert run.stderr.rstrip().endswith("ValueError: a bug deep in training") and "error:" not in run.stderr


def test_ctrl_c_in_training_exits_130_with_the_resume_hint(small, tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mfsa_pipe.training.trainer, "train_one_epoch", ctrl_c)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, train_args(small, out), env={"COLUMNS": "1000"})
    assert res.exit_code == 130, res.output
    assert res.output == f"interrupted: rerun the same command to resume from {out / 'last.ckpt'}\n"


def test_every_user_fixable_error_class_derives_from_user_error():
    from extractors.errors import MediaError
    from extractors.text import SpeechModelError
    from extractors.vectors import VectorsError
    from mfsa_pipe.analysis.checks import AnalyzeError
    from mfsa_pipe.datasets.labels_table import LabelsError
    from mfsa_pipe.checkpoint import CheckpointError, SpecMismatchError
    from mfsa_pipe.datasets.base import DatasetError
    from mfsa_pipe.devices import DeviceError
    from mfsa_pipe.executors import ExecutorError
    from mfsa_pipe.datasets.label_adapters import AdapterError
    from mfsa_pipe.output_lock import OutputBusyError
    from mfsa_pipe.training import TrainingError

    bad_input = (MediaError, AnalyzeError, LabelsError, CheckpointError, SpecMismatchError, DatasetError, DeviceError,
                 ExecutorError, AdapterError, OutputBusyError, TrainingError)
    assert all(issubclass(cls, UserError) and cls.exit_code == 2 for cls in bad_input)
    assert all(issubclass(cls, SetupError) and cls.exit_code == 1 for cls in (SpeechModelError, VectorsError))
    # what callers catch today still catches them
    assert all(issubclass(cls, ValueError) for cls in (LabelsError, CheckpointError, SpecMismatchError, DatasetError,
                                                        DeviceError, AdapterError, TrainingError))
    assert issubclass(SpeechModelError, RuntimeError) and issubclass(VectorsError, RuntimeError)
