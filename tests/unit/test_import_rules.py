"""The import rules of ARCHITECTURE.md, read from the source (AST), so a change that breaks one fails here:

- pyfuse3 only in unionfs/ops.py and unionfs/mount.py (the FUSE shell);
- argparse, print(), sys.stdout/sys.stderr and exiting only in cli modules (`cli.py`, or a module of a `cli/`
  package);
- the registry HTTP client (urllib, http) only in imagebuild/transport/, other HTTP (the download of `ADD URL`)
  only in imagebuild/builder/addurl.py;
- imagebuild uses unionfs only through its top-level API (`from unionfs import NAME`, NAME in `unionfs.__all__`),
  and the API holds exactly what imagebuild uses;
- unionfs never imports imagebuild.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("unionfs", "imagebuild")
FUSE_SHELL = {"unionfs/ops.py", "unionfs/mount.py"}
HTTP_HOME = "imagebuild/transport/"
HTTP_MODULES = {"imagebuild/builder/addurl.py"}  # ADD of URLs: the one module outside transport/ that downloads
EXITS = {("sys", "exit"), ("os", "_exit")}


def modules(root: Path) -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def is_cli(rel: str) -> bool:
    parts = rel.removesuffix(".py").split("/")
    return "cli" in parts


def imported(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) for every import, at any depth; `import a.b` gives ("a.b", [])."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def within(module: str, *tops: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in tops)


def declared_api(root: Path) -> set[str]:
    tree = ast.parse((root / "unionfs" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def violations(root: Path) -> list[str]:
    found: list[str] = []
    api = declared_api(root)
    used: set[str] = set()
    for rel, tree in modules(root):
        package = rel.split("/", 1)[0]
        for line, module, names in imported(tree):
            where = f"{rel}:{line}"
            if within(module, "pyfuse3") and rel not in FUSE_SHELL:
                found.append(f"{where}: pyfuse3 outside the FUSE shell")
            if within(module, "argparse") and not is_cli(rel):
                found.append(f"{where}: argparse outside a cli module")
            if within(module, "urllib", "http") and not rel.startswith(HTTP_HOME) and rel not in HTTP_MODULES:
                found.append(f"{where}: an HTTP client ({module}) outside {HTTP_HOME} and {', '.join(HTTP_MODULES)}")
            if package == "unionfs" and within(module, "imagebuild"):
                found.append(f"{where}: unionfs imports imagebuild")
            if package == "imagebuild" and within(module, "unionfs"):
                if module != "unionfs" or not names:
                    found.append(f"{where}: imagebuild imports {module} past the unionfs API (from unionfs import ...)")
                for name in names:
                    used.add(name)
                    if name not in api:
                        found.append(f"{where}: unionfs.{name} is not in unionfs.__all__")
        if is_cli(rel):
            continue
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("print", "exit", "quit")
            ):
                found.append(f"{where}: {node.func.id}() outside a cli module")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                pair = (node.value.id, node.attr)
                if pair in EXITS or (node.value.id == "sys" and node.attr in ("stdout", "stderr")):
                    found.append(f"{where}: {'.'.join(pair)} outside a cli module")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "sys"
                and any(a.name in ("exit", "stdout", "stderr") for a in node.names)
            ):
                found.append(f"{where}: from sys import exit/stdout/stderr outside a cli module")
    found += [f"unionfs/__init__.py: {name} is in __all__ but imagebuild does not use it" for name in api - used]
    return found


def test_the_tree_keeps_every_import_rule() -> None:
    assert violations(REPO) == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the two packages to plant violations in."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    return tmp_path


PLANTED = [
    ("unionfs/union.py", "import pyfuse3\n", "pyfuse3 outside the FUSE shell"),
    ("imagebuild/sandbox.py", "from pyfuse3 import FUSEError\n", "pyfuse3 outside the FUSE shell"),
    ("imagebuild/store/images.py", "import argparse\n", "argparse outside a cli module"),
    ("unionfs/tree.py", "def f() -> None:\n    print('x')\n", "print() outside a cli module"),
    ("imagebuild/analyze.py", "import sys\n\n\ndef f() -> None:\n    sys.exit(1)\n", "sys.exit outside"),
    ("imagebuild/analyze.py", "import sys\n\n\ndef f() -> None:\n    sys.stderr.write('x')\n", "sys.stderr outside"),
    ("imagebuild/layer/tar.py", "import urllib.request\n", "HTTP client (urllib.request)"),
    ("imagebuild/store/blobs.py", "import http.client\n", "HTTP client (http.client)"),
    ("imagebuild/builder/copystep.py", "import urllib.request\n", "HTTP client (urllib.request)"),
    ("unionfs/config.py", "from imagebuild.errors import BuildError\n", "unionfs imports imagebuild"),
    ("imagebuild/analyze.py", "from unionfs.tree import Tree\n", "past the unionfs API"),
    ("imagebuild/analyze.py", "import unionfs.api\n", "past the unionfs API"),
    ("imagebuild/analyze.py", "from unionfs import copyup\n", "unionfs.copyup is not in unionfs.__all__"),
]


@pytest.mark.parametrize(("rel", "code", "said"), PLANTED)
def test_a_planted_violation_is_found(tree: Path, rel: str, code: str, said: str) -> None:
    path = tree / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n" + code, encoding="utf-8")
    found = violations(tree)
    assert len(found) == 1 and rel in found[0] and said in found[0], found


def test_an_api_name_imagebuild_does_not_use_is_found(tree: Path) -> None:
    init = tree / "unionfs" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8").replace("__all__ = [", '__all__ = [\n    "Tree2",'))
    assert violations(tree) == ["unionfs/__init__.py: Tree2 is in __all__ but imagebuild does not use it"]


@pytest.mark.parametrize("module", ["unionfs", "imagebuild.cli"])
def test_the_api_and_the_imagebuild_cli_do_not_load_the_fuse_daemon(module: str) -> None:
    """`import unionfs` stays cheap: pyfuse3 and trio are the daemon's, and the imagebuild CLI never pays for them."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyfuse3', 'trio')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout
