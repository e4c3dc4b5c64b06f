"""One-off: the module moves of issue 14 item 3 (mfsa_pipe/ grouped by application) and the rewrite
of every reference to the old module paths. Kept so that the rewrite can be rerun over code that
was written against the old paths (a branch merged later); delete once nothing uses them.

    python scripts/regroup_modules.py --move      # git mv (once), then rewrite
    python scripts/regroup_modules.py             # rewrite only (idempotent)

`mfsa_pipe.analyze` stays the API function (the package exports it); only its module uses
(`mfsa_pipe.analyze.x`, `import mfsa_pipe.analyze`, `from mfsa_pipe.analyze import`) move.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOVES = {  # old module -> new module, under mfsa_pipe
    "analyze": "analysis.video",
    "batch": "analysis.batch",
    "report": "analysis.report",
    "render": "analysis.render",
    "inference": "analysis.inference",
    "evaluation": "training.evaluation",
    "metrics": "training.metrics",
    "synthetic": "training.synthetic",
    "build_dataset": "datasets.build",
    "label_adapters": "datasets.label_adapters",
}
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".ini", ".yaml", ".yml"}
SKIP = {"scripts/regroup_modules.py"}


def rewrite(text: str) -> str:
    for old, new in MOVES.items():
        package, _, leaf = new.rpartition(".")
        # `from mfsa_pipe import old [as x]` -> `from mfsa_pipe.package import leaf [as x]`; the
        # package's `analyze` is the API function now, so that import stays as it is
        if old != "analyze":
            text = re.sub(rf"\bfrom mfsa_pipe import {old}\b(?! as)", f"from mfsa_pipe.{package} import {leaf}"
                          + ("" if leaf == old else f" as {old}"), text)
            text = re.sub(rf"\bfrom mfsa_pipe import {old} as\b", f"from mfsa_pipe.{package} import {leaf} as", text)
        text = re.sub(rf"\bmfsa_pipe/{old}\.py\b", f"mfsa_pipe/{new.replace('.', '/')}.py", text)
        if old == "analyze":  # the package attribute is the function: rewrite module uses only
            text = re.sub(r"\b(import|from) mfsa_pipe\.analyze\b", r"\1 mfsa_pipe.analysis.video", text)
            text = re.sub(r"\bmfsa_pipe\.analyze\.(?=\w)", "mfsa_pipe.analysis.video.", text)
        else:
            text = re.sub(rf"\bmfsa_pipe\.{old}\b", f"mfsa_pipe.{new}", text)
    return text


def project_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [ROOT / name for name in listed.splitlines()
            if Path(name).suffix in SUFFIXES and name not in SKIP and (ROOT / name).is_file()]


def move() -> None:
    for old, new in MOVES.items():
        target = ROOT / "mfsa_pipe" / (new.replace(".", "/") + ".py")
        subprocess.run(["git", "mv", f"mfsa_pipe/{old}.py", str(target.relative_to(ROOT))], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--move", action="store_true", help="git mv the modules first")
    if parser.parse_args().move:
        move()
    for path in project_files():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print("rewrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
