"""Dockerfile lint: rules with ids, severities, FILE:LINE locations, why and fix; and what the context costs.

Every instruction makes a layer and layers are read-only, so what one layer adds a later one cannot take
back; the context is read whole before a build, so it should hold only what the image needs. The rules teach
exactly that. Pure: reads the Dockerfile and walks the context, prints nothing.
Inline ignores: a comment `# imagebuild-lint ignore=IB009,IB012` applies to the next instruction.
"""

from __future__ import annotations

import enum
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from imagebuild.context import DockerIgnore, glob_regex
from imagebuild.dockerfile import Dockerfile, DockerfileError, Instruction, parse, parse_port_spec

LARGE_CONTEXT = 10 * 1000 * 1000
USUAL_JUNK = (".git", "node_modules", "__pycache__", ".venv", "venv", "target", "build", "dist", ".tox", "*.log")


class Severity(enum.IntEnum):
    STYLE = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    why: str
    fix: str


RULES = {
    r.id: r
    for r in (
        Rule(
            "IB000",
            Severity.ERROR,
            "The Dockerfile does not parse",
            "nothing can be built from it",
            "fix the line named in the message",
        ),
        Rule(
            "IB001",
            Severity.ERROR,
            "FROM is not the first instruction",
            "every build starts from a base image; only ARG and comments may come before FROM",
            "move FROM to the top (ARG lines used by FROM may stay above it)",
        ),
        Rule(
            "IB002",
            Severity.WARNING,
            "Base image without a tag, or tagged latest",
            "'latest' moves: the same Dockerfile then builds different images",
            "pin a tag, e.g. FROM debian:12",
        ),
        Rule(
            "IB003",
            Severity.WARNING,
            "Package install without cleanup in the same RUN",
            "the package index stays in the layer; deleting it in a later RUN does not shrink the image",
            "end the same RUN with 'rm -rf /var/lib/apt/lists/*' (apt) or use 'apk add --no-cache'",
        ),
        Rule(
            "IB004",
            Severity.WARNING,
            "apt-get upgrade in a build",
            "upgrades make builds unrepeatable and belong in the base image",
            "use a newer base image, or install the exact versions you need",
        ),
        Rule(
            "IB005",
            Severity.WARNING,
            "cd in RUN instead of WORKDIR",
            "a cd lasts only for its RUN; WORKDIR sets the directory for every later step and the container",
            "use WORKDIR /path",
        ),
        Rule(
            "IB006",
            Severity.WARNING,
            "Relative WORKDIR",
            "it depends on every WORKDIR before it",
            "give an absolute path",
        ),
        Rule(
            "IB007",
            Severity.INFO,
            "ADD where COPY would do",
            "ADD also unpacks archives and fetches URLs: COPY says exactly what happens",
            "use COPY",
        ),
        Rule(
            "IB008",
            Severity.WARNING,
            "COPY of the whole context before installing dependencies",
            "any change to any file then reinstalls every dependency: the cache misses from the COPY on",
            "COPY the dependency list (requirements.txt, package.json...) first, install, then COPY the rest",
        ),
        Rule(
            "IB009",
            Severity.INFO,
            "Consecutive RUN instructions",
            "each RUN is a layer; files one RUN creates and the next deletes still ship in the first",
            "join them with && into one RUN",
        ),
        Rule(
            "IB010",
            Severity.ERROR,
            "A secret in ENV or ARG",
            "ENV and ARG values are stored in the image's config and history for anyone to read",
            "pass secrets at run time, or use a build secret mount",
        ),
        Rule(
            "IB011",
            Severity.WARNING,
            "More than one CMD or ENTRYPOINT in a stage",
            "only the last one takes effect",
            "keep one",
        ),
        Rule(
            "IB012",
            Severity.WARNING,
            "Shell-form CMD or ENTRYPOINT",
            "the command runs under /bin/sh -c, which does not pass on SIGTERM: containers stop slowly",
            'use the JSON form: CMD ["program", "arg"]',
        ),
        Rule(
            "IB013",
            Severity.ERROR,
            "EXPOSE of an invalid port",
            "ports are 1 to 65535 with tcp, udp or sctp",
            "fix the port",
        ),
        Rule(
            "IB014",
            Severity.WARNING,
            "sudo in RUN",
            "build steps run as root already (or as USER, on purpose); sudo adds a package and hides intent",
            "drop sudo, or switch USER around the step",
        ),
        Rule(
            "IB015",
            Severity.WARNING,
            "The final stage runs as root",
            "a process that does not need root should not have it",
            "add USER with a non-root user at the end",
        ),
        Rule(
            "IB016",
            Severity.ERROR,
            "COPY source excluded by .dockerignore",
            "the build cannot see it: the COPY fails",
            "remove the pattern from .dockerignore, or the COPY",
        ),
        Rule(
            "IB017",
            Severity.WARNING,
            "Large build context without .dockerignore",
            "the whole context is read for every build",
            "add a .dockerignore listing what the image does not need",
        ),
    )
}

SECRET = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL)", re.IGNORECASE)
INSTALL = re.compile(
    r"\b(pip3?\s+install|npm\s+(install|ci)|yarn\s+install|go\s+mod\s+download|bundle\s+install|"
    r"apt-get\s+install|apk\s+add|composer\s+install|cargo\s+build|mvn\s)"
)
IGNORE_COMMENT = re.compile(r"#\s*imagebuild-lint\s+ignore=([A-Za-z0-9_, ]+)")


@dataclass
class Finding:
    rule: Rule
    path: str
    line: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule.id,
            "severity": self.rule.severity.name.lower(),
            "file": self.path,
            "line": self.line,
            "title": self.rule.title,
            "message": self.message,
            "why": self.rule.why,
            "fix": self.rule.fix,
        }


@dataclass
class ContextSummary:
    files: int = 0
    size: int = 0
    biggest: list[tuple[str, int]] = field(default_factory=list)
    ignored_size: int = 0  # what the current .dockerignore leaves out
    junk: list[tuple[str, int]] = field(default_factory=list)  # usual suspects a .dockerignore would leave out


@dataclass
class LintReport:
    findings: list[Finding]
    context: ContextSummary | None


def lint(dockerfile_path: str, context_dir: str | None, *, text: str | None = None) -> LintReport:
    if text is None:
        with open(dockerfile_path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    findings: list[Finding] = []
    try:
        df = parse(text, dockerfile_path)
    except DockerfileError as exc:
        if "FROM" in exc.message and "first" in exc.message:
            rule = RULES["IB001"]
        elif "port" in exc.message.lower():
            rule = RULES["IB013"]  # the parser already refuses bad ports
        else:
            rule = RULES["IB000"]
        return LintReport([Finding(rule, exc.path, exc.line, exc.message)], None)
    ignored = _inline_ignores(text)
    findings += _check(df)
    summary = None
    if context_dir is not None:
        ignore = _dockerignore(context_dir)
        summary = _summarize(context_dir, ignore)
        findings += _check_context(df, context_dir, ignore, summary)
    findings = [f for f in findings if f.rule.id not in ignored.get(f.line, set())]
    findings.sort(key=lambda f: (f.line, f.rule.id))
    return LintReport(findings, summary)


def _inline_ignores(text: str) -> dict[int, set[str]]:
    """Line number of the instruction after each ignore comment -> the rule ids it silences."""
    result: dict[int, set[str]] = {}
    pending: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        match = IGNORE_COMMENT.search(line)
        if match:
            pending |= {part.strip().upper() for part in match.group(1).split(",") if part.strip()}
        elif line.strip() and not line.lstrip().startswith("#") and pending:
            result[number] = pending
            pending = set()
    return result


def _shell_text(instruction: Instruction) -> str:
    return instruction.args if isinstance(instruction.args, str) else " ".join(instruction.args)


def _check(df: Dockerfile) -> list[Finding]:
    out: list[Finding] = []

    def add(rule_id: str, instruction: Instruction, message: str) -> None:
        out.append(Finding(RULES[rule_id], df.path, instruction.line, message))

    stage_names = {s.name.lower() for s in df.stages if s.name}
    for stage in df.stages:
        base = stage.base
        if base != "scratch" and base.lower() not in stage_names and "$" not in base and "@" not in base:
            name_tag = base.rsplit("/", 1)[-1]
            if ":" not in name_tag:
                add("IB002", stage.from_instruction or stage.instructions[0], f"'{base}' has no tag: it means latest")
            elif name_tag.endswith(":latest"):
                add("IB002", stage.from_instruction or stage.instructions[0], f"'{base}' is tagged latest")
        previous: Instruction | None = None
        seen_copy_all: Instruction | None = None
        commands: dict[str, list[Instruction]] = {"CMD": [], "ENTRYPOINT": []}
        for ins in stage.instructions:
            text = _shell_text(ins) if ins.cmd == "RUN" else ""
            if ins.cmd == "RUN":
                if re.search(r"\bapt-get\s+(-\S+\s+)*install\b", text) and "/var/lib/apt/lists" not in text:
                    add("IB003", ins, "apt-get install without 'rm -rf /var/lib/apt/lists/*' in the same RUN")
                if re.search(r"\bapk\s+add\b", text) and "--no-cache" not in text:
                    add("IB003", ins, "apk add without --no-cache")
                if re.search(r"\bapt-get\s+(-\S+\s+)*(dist-)?upgrade\b", text):
                    add("IB004", ins, "apt-get upgrade in a build step")
                if re.match(r"\s*cd\s", text) or re.search(r"(&&|;)\s*cd\s", text):
                    add("IB005", ins, "cd inside RUN: use WORKDIR")
                if re.search(r"(^|[\s;&|])sudo\s", text):
                    add("IB014", ins, "sudo in RUN")
                if previous is not None and previous.cmd == "RUN" and not ins.flags and not previous.flags:
                    add("IB009", ins, f"RUN right after the RUN on line {previous.line}: one layer would do")
                if seen_copy_all is not None and INSTALL.search(text):
                    add("IB008", seen_copy_all, f"the whole context is copied before installing (line {ins.line})")
                    seen_copy_all = None
            elif ins.cmd == "WORKDIR":
                path = str(ins.args)
                if not path.startswith(("/", "$")):
                    add("IB006", ins, f"WORKDIR {path} is relative")
            elif ins.cmd == "ADD":
                sources = ins.args[:-1] if isinstance(ins.args, list) else []
                if sources and not any("://" in s or re.search(r"\.(tar|tgz|tar\.\w+|txz|tbz2?)$", s) for s in sources):
                    add("IB007", ins, "ADD of plain files")
            elif ins.cmd in ("ENV", "ARG"):
                for pair in ins.pairs:
                    if SECRET.search(pair.key):
                        add("IB010", ins, f"{ins.cmd} {pair.key} looks like a secret")
            elif ins.cmd in commands:
                commands[ins.cmd].append(ins)
                if not ins.json_form:
                    add("IB012", ins, f"{ins.cmd} in shell form")
            elif ins.cmd == "EXPOSE":
                for word in ins.args if isinstance(ins.args, list) else str(ins.args).split():
                    if "$" in word:
                        continue
                    try:
                        spec = parse_port_spec(word)
                        valid = 1 <= spec.start <= spec.end <= 65535
                    except (ValueError, DockerfileError):
                        valid = False
                    if not valid:
                        add("IB013", ins, f"EXPOSE {word} is not a valid port")
            if ins.cmd == "COPY" and "from" not in ins.flags and isinstance(ins.args, list):
                if any(os.path.normpath(s) == "." for s in ins.args[:-1]):
                    seen_copy_all = ins
            previous = ins
        for cmd, found in commands.items():
            for extra in found[1:]:
                add("IB011", extra, f"{cmd} on line {found[0].line} is overridden by this one")
    final = df.stages[-1]
    users = [i for i in final.instructions if i.cmd == "USER"]
    if not users or str(users[-1].args).split(":")[0] in ("root", "0"):
        anchor = users[-1] if users else final.from_instruction or final.instructions[0]
        add("IB015", anchor, "the final stage has no USER with a non-root user")
    return out


def _dockerignore(context_dir: str) -> DockerIgnore | None:
    path = os.path.join(context_dir, ".dockerignore")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return DockerIgnore.parse(f.read())


def _summarize(context_dir: str, ignore: DockerIgnore | None) -> ContextSummary:
    summary = ContextSummary()
    sizes: dict[str, int] = {}
    for dirpath, dirs, files in os.walk(context_dir):
        dirs.sort()
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, context_dir)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            if ignore is not None and ignore.excluded(rel):
                summary.ignored_size += st.st_size
                continue
            sizes[rel] = st.st_size
    summary.files, summary.size = len(sizes), sum(sizes.values())
    summary.biggest = sorted(sizes.items(), key=lambda x: (-x[1], x[0]))[:5]
    for pattern in USUAL_JUNK:
        regex = glob_regex(pattern if "/" in pattern or "*" in pattern else f"**/{pattern}", below=True)
        size = sum(s for rel, s in sizes.items() if regex.match(rel))
        if size:
            summary.junk.append((pattern, size))
    return summary


def _check_context(
    df: Dockerfile, context_dir: str, ignore: DockerIgnore | None, summary: ContextSummary
) -> list[Finding]:
    out: list[Finding] = []
    if ignore is not None:
        for ins in df.instructions:
            if ins.cmd in ("COPY", "ADD") and "from" not in ins.flags and isinstance(ins.args, list):
                for source in ins.args[:-1]:
                    rel = os.path.normpath(source).lstrip("/")
                    if rel not in (".", "") and "$" not in rel and ignore.excluded(rel):
                        out.append(
                            Finding(RULES["IB016"], df.path, ins.line, f"'{source}' is excluded by .dockerignore")
                        )
    elif summary.size > LARGE_CONTEXT:
        saving = ", ".join(f"{pattern} ({size} bytes)" for pattern, size in summary.junk) or "nothing obvious"
        first = df.stages[0].from_instruction or df.instructions[0]
        out.append(
            Finding(
                RULES["IB017"],
                df.path,
                first.line,
                f"the context is {summary.size} bytes in {summary.files} files; a .dockerignore could "
                f"leave out: {saving}",
            )
        )
    return out


def failing(report: LintReport, threshold: Severity) -> bool:
    return any(f.rule.severity >= threshold for f in report.findings)


def render_text(report: LintReport) -> str:
    lines = [
        f"{f.path}:{f.line}: {f.rule.severity.name.lower()} {f.rule.id} {f.message}\n"
        f"    why: {f.rule.why}\n    fix: {f.rule.fix}"
        for f in report.findings
    ]
    if report.context is not None:
        c = report.context
        lines.append(
            f"context: {c.files} files, {c.size} bytes"
            + (f"; .dockerignore leaves out {c.ignored_size} bytes" if c.ignored_size else "")
        )
        lines.extend(f"  {size:>12}  {path}" for path, size in c.biggest)
        if c.junk:
            lines.append("  usual suspects in it: " + ", ".join(f"{p} ({s} bytes)" for p, s in c.junk))
    lines.append(f"{len(report.findings)} finding(s)")
    return "\n".join(lines)


def render_json(report: LintReport) -> str:
    doc: dict[str, Any] = {"findings": [f.to_dict() for f in report.findings]}
    if report.context is not None:
        c = report.context
        doc["context"] = {
            "files": c.files,
            "bytes": c.size,
            "ignored_bytes": c.ignored_size,
            "biggest": [{"path": p, "bytes": s} for p, s in c.biggest],
            "would_ignore": [{"pattern": p, "bytes": s} for p, s in c.junk],
        }
    return json.dumps(doc, indent=2)
