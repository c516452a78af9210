"""scripts/patch_pyfuse3.py: any failure keeps the stock pyfuse3, in one line, and the install goes on."""

from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "patch_pyfuse3.py"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("patch_pyfuse3", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["patch_pyfuse3"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("failure", [OSError(2, "No such file"), TypeError("unexpected keyword 'filter'"), KeyError])
def test_any_failure_keeps_the_stock_pyfuse3_in_one_line(
    failure: BaseException | type[BaseException], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = script()
    monkeypatch.setattr(module, "installed", lambda: ("3.5.0", 0))

    def fail(_requirement: str, _tmp: Path) -> str:
        raise failure

    monkeypatch.setattr(module, "build", fail)
    assert module.main() == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("patch_pyfuse3: keeping the stock pyfuse3 (")


def test_an_installed_patch_of_this_level_is_not_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    module = script()
    monkeypatch.setattr(module, "installed", lambda: ("3.5.0", module.PATCH_LEVEL))
    monkeypatch.setattr(module, "build", lambda *_: pytest.fail("built again"))
    assert module.main() == 0


def test_unpacking_refuses_members_outside_the_tree(tmp_path: Path) -> None:
    archive = tmp_path / "pyfuse3-9.tar.gz"
    outside = tmp_path / "evil.txt"
    outside.write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(outside, arcname="../evil.txt")
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(RuntimeError, match="unexpected member"):
        script().unpack(archive, into)
    assert list(into.iterdir()) == []
