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
