"""Which README lines the walk runs: every command of the `sh` blocks, continuation lines joined, except the
project's own make targets and comments."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

WALK = Path(__file__).resolve().parents[2] / "scripts" / "readme_walk.py"


def walk() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_walk", WALK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_walk"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


README = """# Title

```sh
make demo    # the install: run by check-fresh itself
make test
```

Text.

```toml
[storage]
```

```sh
# a comment
mkdir -p ~/c && echo hi > ~/c/x
printf 'a\\n' \\
    > ~/y
UNIONFS_FUZZ_TARGET=x make fuzz FUZZ_MINUTES=5
unionfs umount ~/c
```
"""


def test_commands_of_sh_blocks_with_their_lines() -> None:
    found = walk().commands(README)
    assert [(c.line, c.text) for c in found] == [
        (16, "mkdir -p ~/c && echo hi > ~/c/x"),
        (17, "printf 'a\\n' \\\n    > ~/y"),
        (20, "unionfs umount ~/c"),
    ]


def test_the_script_names_the_failing_line(tmp_path: Path) -> None:
    module = walk()
    items = module.commands("```sh\ntrue\nfalse && true\necho never\n```\n")
    script = tmp_path / "walk.sh"
    script.write_text(module.script(items, "README.md"))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == "readme walk: README.md:3: exited 1: false && true"
    assert "never" not in done.stdout


def test_the_real_readme_has_commands_to_walk() -> None:
    readme = (WALK.parents[1] / "README.md").read_text()
    texts = [c.text for c in walk().commands(readme)]
    assert any(t.startswith("imagebuild build") for t in texts)
    assert not any(t.startswith("make ") for t in texts)


def test_a_server_already_stopped_is_no_failure_at_exit(tmp_path: Path) -> None:
    module = walk()
    items = module.commands("```sh\nsleep 30 & sleep 0.1\nkill $!\n```\n")
    script = tmp_path / "walk.sh"
    script.write_text(module.script(items, "README.md"))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stderr) == (0, "")
