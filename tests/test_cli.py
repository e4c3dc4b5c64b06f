from typer.testing import CliRunner

from mfsa_pipe import __version__
from mfsa_pipe.cli import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "MFSA" in result.stdout


def test_console_script_exits_with_the_commands_code_after_exit_handlers(tmp_path):
    """main() ends the process without the interpreter's teardown: the exit code, the flushed
    output and the registered exit handlers must be those of a normal exit."""
    import subprocess
    import sys
    import textwrap

    def run(argv):
        script = textwrap.dedent(f"""
            import atexit, sys
            from mfsa_pipe.cli import main
            atexit.register(lambda: print("exit handler ran", file=sys.stderr))
            sys.argv = ["mfsa-pipe"] + {argv!r}
            print("unflushed", end="")
            main()
        """)
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    ok = run(["--version"])
    assert ok.returncode == 0 and ok.stdout == f"unflushedmfsa-pipe {__version__}\n", ok
    assert ok.stderr == "exit handler ran\n"
    bad = run(["analyze", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")])
    assert bad.returncode == 2 and "missing.mp4" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr, bad
    assert bad.stderr.endswith("exit handler ran\n") and not (tmp_path / "out").exists()
