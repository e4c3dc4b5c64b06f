"""The layout of mfsa_pipe/ (issue 14, item 3): three applications over shared modules, no import
cycle, and a package that stays light to import. The graph is read from the sources
(scripts/import_graph.py), function-local imports included."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = {
    "analysis": ("mfsa_pipe.analysis",),
    "training": ("mfsa_pipe.training",),
    "dataset building": ("mfsa_pipe.datasets.build", "mfsa_pipe.datasets.label_adapters"),
}


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.import_graph(ROOT)


def application_of(module: str) -> str | None:
    for name, prefixes in APPLICATIONS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


def test_the_graph_sees_function_local_imports(graph):
    assert graph.has_edge("mfsa_pipe.analysis.video", "mfsa_pipe.analysis.render")  # imported inside a function
    assert graph.has_edge("mfsa_pipe.analysis.batch", "mfsa_pipe.analysis.video")
    assert graph.has_edge("mfsa_pipe.training.trainer", "mfsa_pipe.training.evaluation")
    assert graph.has_edge("mfsa_pipe.datasets.build", "mfsa_pipe.executors")


def test_applications_do_not_import_each_other(graph):
    crossing = [(a, b) for a, b in graph.edges
                if application_of(a) and application_of(b) and application_of(a) != application_of(b)]
    assert crossing == []


def test_shared_modules_import_no_application(graph):
    shared = [m for m in graph if m.startswith("mfsa_pipe.") and application_of(m) is None
              and not m.startswith(("mfsa_pipe.commands", "mfsa_pipe.cli"))]
    assert {"mfsa_pipe.checkpoint", "mfsa_pipe.presence", "mfsa_pipe.datasets.base"} <= set(shared)
    upward = [(a, b) for a in shared for b in graph.successors(a) if application_of(b)]
    assert upward == []


def test_no_import_cycle(graph):
    assert list(nx.simple_cycles(graph)) == []


def test_the_package_exports_the_api_and_stays_light():
    code = ("import sys, mfsa_pipe, mfsa_pipe.training.metrics, mfsa_pipe.training.synthetic; "
            "heavy = sorted({'torch', 'cv2'} & set(sys.modules)); "
            "from mfsa_pipe import analyze, Report; from mfsa_pipe.analysis.video import analyze as f; "
            "from mfsa_pipe.analysis.report import Report as R; "
            "print(heavy, analyze is f, Report is R, type(sys.modules['mfsa_pipe.analysis.video']).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True", "True", "module"]
