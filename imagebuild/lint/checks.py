"""The rules that need only the parsed Dockerfile (IB002 to IB015).

Rules about image size (IB003 cleanup, IB009 layer count) look only at the stages whose layers end up in
the final image: the last stage and the stages it is built FROM. A builder stage's layers never ship.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from imagebuild.dockerfile import Dockerfile, ExpansionError, Instruction, Stage, expand, parse_port_spec

from . import packages
from .model import Finding
from .rules import RULES
from .shell import Command, commands, run_script

_ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst|tzst|tar\.lz4|gz|bz2|xz)$", re.I)
_REMOTE = re.compile(r"^([a-z][a-z0-9+.-]*://|git@)", re.I)
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_WORDS = ("PASSWORD", "PASSWD", "PASS", "SECRET", "SECRETS", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_ENDINGS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY")
_KEY_QUALIFIERS = frozenset({"API", "ACCESS", "PRIVATE", "SECRET", "SIGNING", "ENCRYPTION", "AUTH", "MASTER"})
_NOT_SECRET_ENDINGS = frozenset({"FILE", "PATH", "DIR", "URL", "URI", "ENDPOINT", "HOST", "NAME", "ID", "TYPE"})
_ROOT_USERS = frozenset({"root", "0"})


@dataclass
class _Collector:
    path: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, rule_id: str, instruction: Instruction, message: str) -> None:
        self.findings.append(Finding(RULES[rule_id], self.path, instruction.line, message))


def check(df: Dockerfile) -> list[Finding]:
    """Every finding of the instruction rules, in no particular order."""
    out = _Collector(df.path)
    meta = _meta_env(df)
    names = {stage.name for stage in df.stages if stage.name}
    shipped = _shipped(df)
    for stage in df.stages:
        _check_base(out, stage, meta, names)
        _check_stage(out, stage, stage.index in shipped)
    _check_final_user(out, df)
    return out.findings


def _meta_env(df: Dockerfile) -> dict[str, str]:
    """The values the meta ARGs (before the first FROM) give by default, for expanding FROM lines."""
    env: dict[str, str] = {}
    for instruction in df.meta_args:
        for pair in instruction.pairs:
            if pair.value is not None:
                try:
                    env[pair.key] = expand(pair.value, env, df.escape)
                except ExpansionError:
                    continue
    return env


def _resolve(text: str, env: Mapping[str, str]) -> str | None:
    """``text`` with meta ARG defaults substituted, or None when it needs a value only the build knows."""
    if "$" not in text:
        return text
    if any(name not in env for name in _VARIABLE.findall(text)):
        return None
    try:
        return expand(text, env)
    except ExpansionError:
        return None


def _shipped(df: Dockerfile) -> set[int]:
    """Indexes of the stages whose layers are in the final image: the last stage and its FROM ancestors."""
    by_name = {stage.name: stage for stage in df.stages if stage.name}
    out: set[int] = set()
    stage: Stage | None = df.stages[-1]
    while stage is not None and stage.index not in out:
        out.add(stage.index)
        parent = by_name.get(stage.base.lower())
        stage = parent if parent is not None and parent.index < stage.index else None
    return out


def _check_base(out: _Collector, stage: Stage, meta: Mapping[str, str], names: set[str]) -> None:
    """IB002: a base image must name a tag other than latest, or a digest."""
    start = stage.from_instruction
    base = _resolve(stage.base, meta)
    if start is None or base is None or base.lower() in names or base.lower() == "scratch" or "@" in base:
        return
    last = base.rsplit("/", 1)[-1]
    shown = base if base == stage.base else f"{stage.base} ({base})"
    if ":" not in last:
        out.add("IB002", start, f"FROM {shown} has no tag, so it means {base}:latest")
    elif last.rsplit(":", 1)[1] == "latest":
        out.add("IB002", start, f"FROM {shown} is tagged latest")


def _check_stage(out: _Collector, stage: Stage, shipped: bool) -> None:
    copy_all: Instruction | None = None
    previous: Instruction | None = None
    last: dict[str, Instruction] = {}
    for ins in stage.instructions:
        if ins.cmd == "RUN":
            run = commands(run_script(ins))
            _check_run(out, ins, run, shipped)
            install = packages.dependency_install(run)
            if copy_all is not None and install is not None:
                message = f"COPY of the whole context comes before '{install}' on line {ins.line}"
                out.add("IB008", copy_all, message)
                copy_all = None
            if shipped and previous is not None and _joinable(previous, ins):
                out.add("IB009", ins, f"this RUN follows the RUN on line {previous.line}: one RUN makes one layer")
        elif ins.cmd == "WORKDIR":
            _check_workdir(out, ins)
        elif ins.cmd == "ADD":
            _check_add(out, ins)
        elif ins.cmd in ("ENV", "ARG"):
            _check_secrets(out, ins)
        elif ins.cmd in ("CMD", "ENTRYPOINT"):
            if ins.cmd in last:
                message = f"this {ins.cmd} replaces the one on line {last[ins.cmd].line}: only the last one counts"
                out.add("IB011", ins, message)
            last[ins.cmd] = ins
            if not ins.json_form:
                out.add("IB012", ins, f"{ins.cmd} in shell form runs under /bin/sh -c")
        elif ins.cmd == "EXPOSE":
            _check_expose(out, ins)
        if ins.cmd == "COPY" and copy_all is None and _copies_everything(ins):
            copy_all = ins
        previous = ins


def _check_run(out: _Collector, ins: Instruction, run: list[Command], shipped: bool) -> None:
    if shipped:
        targets = [_mount_target(spec) for spec in ins.flag_values("mount") if "type=cache" in spec]
        for problem in packages.cache_problems(run, [t for t in targets if t]):
            out.add("IB003", ins, problem.message)
    for upgrade in packages.upgrades(run):
        out.add("IB004", ins, f"'{upgrade}' upgrades every package of the base in this layer")
    if any(c.name == "cd" for c in run):
        out.add("IB005", ins, "cd in RUN: the directory is forgotten when the RUN ends")
    if any(c.name == "sudo" or "sudo" in c.prefixes for c in run):
        out.add("IB014", ins, "sudo in RUN")


def _mount_target(spec: str) -> str | None:
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key.strip() in ("target", "dst", "destination"):
            return value.strip()
    return None


def _joinable(previous: Instruction, ins: Instruction) -> bool:
    """Two RUNs one after the other that one shell-form RUN could do (same flags, no exec form)."""
    return (
        previous.cmd == "RUN"
        and not previous.json_form
        and not ins.json_form
        and sorted(previous.flag_list) == sorted(ins.flag_list)
    )


def _copies_everything(ins: Instruction) -> bool:
    """COPY . (or ./, or *) from the context."""
    if "from" in ins.flags or not isinstance(ins.args, list):
        return False
    return any(source.rstrip("/") in (".", "") or source in ("*", "./*") for source in ins.args[:-1])


def _check_workdir(out: _Collector, ins: Instruction) -> None:
    path = str(ins.args).strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1]
    if path.startswith(("/", "$")) or re.match(r"^[A-Za-z]:[\\/]", path):
        return
    out.add("IB006", ins, f"WORKDIR {path} is relative to whatever the previous WORKDIR was")


def _check_add(out: _Collector, ins: Instruction) -> None:
    if not isinstance(ins.args, list) or any(flag in ins.flags for flag in ("checksum", "keep-git-dir")):
        return
    heredocs = {f"<<{h.name}" for h in ins.heredocs} | {f"<<-{h.name}" for h in ins.heredocs}
    sources = ins.args[:-1]
    for source in sources:
        bare = source.strip("'\"")
        if bare not in heredocs and ("$" in bare or _REMOTE.match(bare) or _ARCHIVE.search(bare)):
            return
    shown = " ".join(sources)
    out.add("IB007", ins, f"ADD {shown}: nothing to download or unpack, COPY does the same")


def _check_secrets(out: _Collector, ins: Instruction) -> None:
    for pair in ins.pairs:
        if _looks_secret(pair.key):
            out.add("IB010", ins, f"{ins.cmd} {pair.key} looks like a secret, and stays readable in the image")


def _looks_secret(name: str) -> bool:
    parts = [part for part in re.split(r"[_\-.]+", name.upper()) if part]
    if not parts or parts[-1] in _NOT_SECRET_ENDINGS:
        return False
    for index, part in enumerate(parts):
        if part in _SECRET_WORDS or part.endswith(_SECRET_ENDINGS):
            return True
        if part == "KEY" and index > 0 and parts[index - 1] in _KEY_QUALIFIERS:
            return True
        if part.endswith("KEY") and part[:-3] in _KEY_QUALIFIERS:
            return True
    return False


def _check_expose(out: _Collector, ins: Instruction) -> None:
    """The parser refuses malformed ports (reported as IB013 by the engine); port 0 it lets through."""
    for word in ins.args if isinstance(ins.args, list) else []:
        if "$" in word:
            continue
        if parse_port_spec(word).start == 0:
            out.add("IB013", ins, f"EXPOSE {word}: port 0 is not a port a service can listen on")


def _users(stage: Stage) -> Iterator[Instruction]:
    return (ins for ins in stage.instructions if ins.cmd == "USER")


def _check_final_user(out: _Collector, df: Dockerfile) -> None:
    """IB015: the last USER of the final stage (or of the stage it is built FROM) is not root."""
    by_name = {stage.name: stage for stage in df.stages if stage.name}
    final = df.stages[-1]
    stage: Stage | None = final
    last: Instruction | None = None
    seen: set[int] = set()
    while stage is not None and last is None and stage.index not in seen:
        seen.add(stage.index)
        last = next(reversed(list(_users(stage))), None)
        stage = by_name.get(stage.base.lower())
    anchor = final.from_instruction
    if last is None:
        if anchor is not None:
            out.add("IB015", anchor, "the final stage never sets USER, so the container runs as root")
        return
    user = str(last.args).strip().split(":", 1)[0]
    if user in _ROOT_USERS:
        out.add("IB015", last, f"USER {last.args} is the last USER of the final stage: the container runs as root")
