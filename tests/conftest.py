import pytest
import torch

from helpers import MEDIA_DIR, train_plumbing_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP
    # threads spin waiting for each other (seen: 17x slower). Speed is measured by benchmarks.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    # one extraction cache for the whole session: each bundled clip is extracted once
    path = tmp_path_factory.getbasetemp() / "mfsa-extraction-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def media_dir():
    """examples/media: the bundled clips (GRID, jfk.flac, single_face.mp4, face_noface.mov)."""
    return MEDIA_DIR


@pytest.fixture(scope="session")
def plumbing_checkpoint(tmp_path_factory):
    """A tiny MFSA trained 2 epochs on random data: a checkpoint for the plumbing, trained once per session."""
    return train_plumbing_checkpoint(tmp_path_factory.mktemp("plumbing-only-checkpoint"))


def pytest_collection_modifyitems(config, items):
    # A `-m EXPR` on the command line replaces addopts' `-m 'not slow'`; keep the slow tests out of
    # `-m 'not integration'` too, unless EXPR names them (`-m slow`) or is empty (`-m ''`: everything).
    expression = config.option.markexpr
    if not expression or "slow" in expression:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
