"""The code is packaged from one list of roots: pyproject.toml's, which job staging and the node image follow;
and the platform never imports the CLI (no import cycle)."""

from __future__ import annotations

import ast
import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

from amlab.platform import layout

REPO = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_layout_roots_are_pyprojects():
    tool = pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == layout.ROOTS
    assert tuple(tool["py-modules"]) == layout.MODULES
    for name in layout.ROOTS:  # every root is packaged, with its subpackages
        assert name in tool["packages"]
    for folder in layout.ROOTS.values():
        subpackages = {p.parent for p in (REPO / folder).rglob("__init__.py") if "__pycache__" not in p.parts}
        for sub in subpackages - {REPO / folder}:
            dotted = ".".join([*[k for k, v in layout.ROOTS.items() if v == folder][0].split("."),
                               *sub.relative_to(REPO / folder).parts])
            assert dotted in tool["packages"], f"{dotted} has an __init__.py but is not packaged"


def _docker_context(dest: Path) -> None:
    """What `docker build -f cluster/Dockerfile .` copies: its COPY sources, minus .dockerignore."""
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    sources = [s for line in (REPO / "cluster" / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
               for s in re.sub(r"--\S+", "", line).split()[1:-1]]
    assert sources == ["."], f"the image copies the whole context; got {sources}"

    def skip(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(REPO)
        return {n for n in names for pat in ignored
                if fnmatch.fnmatch(str(rel / n), pat.removeprefix("**/")) or fnmatch.fnmatch(n, pat.removeprefix("**/"))}

    shutil.copytree(REPO, dest, ignore=skip)


def test_node_image_builds_the_wheel_from_what_the_dockerfile_copies(tmp_path):
    _docker_context(tmp_path / "ctx")
    assert not (tmp_path / "ctx" / "tests").exists() and (tmp_path / "ctx" / "dashboards").exists()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheel"), str(tmp_path / "ctx")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("amctl-*.whl"))).namelist()
    for expected in ("amctl.py", "amlab/dashboards/report.html.j2", "amlab/platform/api.py",
                     "amlab/platform/migrations/env.py", "amlab/platform/migrations/versions/0002_cancel_flag.py",
                     "amlab/platform/report/render.py", "amlab/workloads/registry.py"):
        assert expected in names, expected
    assert not any(n.startswith("platform/") for n in names), "the stdlib-shadowing folder name must not be installed"


def test_job_staging_copies_every_root(tmp_path):
    from amlab.platform.remote import stage

    root = stage({"name": "x"})
    try:
        for name in layout.ROOTS:
            assert (root.joinpath(*name.split(".")) / "__init__.py").exists() or name == "amlab.platform", name
        assert (root / "amlab" / "platform" / "api.py").exists() and (root / "amctl.py").exists()
        assert (root / "amlab" / "dashboards" / "report.html.j2").exists()
    finally:
        shutil.rmtree(root)


def test_no_platform_module_imports_the_cli():
    for path in (REPO / "platform").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert "amctl" not in names, f"{path.relative_to(REPO)} imports the CLI"


def test_a_trial_worker_imports_no_store():
    """What a worker imports before its first trial (local_cluster.PRELOADED) and a trial's function: no MLflow, no
    SQL, no Optuna (each worker would hold ~85 MiB more: bench/memory.py); the driver writes the runs."""
    from amlab.platform.local_cluster import PRELOADED

    code = ("import sys; " + "; ".join(f"import {m}" for m in PRELOADED) + "; from amlab.platform.train import run_trial; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'sqlalchemy', 'alembic', 'optuna', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"a trial's worker imports {out.strip()}"


def test_cli_is_thin():
    assert len((REPO / "amctl.py").read_text().splitlines()) <= 300


def test_every_committed_result_names_its_command_and_a_preset_that_validates():
    from amlab.platform.api import plan, sweep_data
    from amlab.platform.presets import PRESETS, preset
    from amlab.platform.status import Kind

    pages = sorted((REPO / "docs" / "results").glob("*.md"))
    for page in pages:
        first = page.read_text().splitlines()[0]
        found = re.fullmatch(r"<!-- produced by: \.venv/bin/python docs/results/run\.py (\S+) -->", first)
        assert found, f"{page.name}: the first line must name the command that produced it"
        launch = plan(Kind.SWEEP, sweep_data(None, found.group(1), []))
        assert page.stem == launch.name, f"{page.name} is not the report of preset {found.group(1)}"
        assert f"# amctl report: {launch.name}" in page.read_text()
        spec = preset(found.group(1))["spec"]  # the page is of the preset as it is now, not an older version
        assert f"- **Scale**: {len(spec['seeds'])} seeds, {spec['train']['steps']} steps" in page.read_text(), page.name
    # one page per paper preset, each linked from the README's results table
    assert {n for n, p in PRESETS.items() if "paper" in p} <= {p.stem for p in pages}
    readme = (REPO / "README.md").read_text()
    assert all(f"](docs/results/{page.name})" in readme for page in pages)
