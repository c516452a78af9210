"""The catalogue of lint rules: ids, severities, titles, why each matters and how to fix it.

The "why" texts teach the few facts a Dockerfile author needs: every instruction makes a layer, layers are
read-only (deleting a file in a later layer does not make the image smaller), the layer cache is reused only
until an instruction's inputs change, and the whole build context is read before the first step.
"""

from __future__ import annotations

from .model import Rule, Severity

E, W, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

ALL_RULES: tuple[Rule, ...] = (
    Rule(
        "IB000",
        E,
        "The Dockerfile does not parse",
        "a build stops at the first line it cannot read, so nothing after it is built or checked",
        "correct the line named in the message",
    ),
    Rule(
        "IB001",
        E,
        "FROM is not the first instruction",
        "every image starts from a base: FROM chooses the layers all later instructions stack theirs on, so only "
        "ARG (for use in FROM) and comments may come before it",
        "move FROM to the top; keep above it only the ARGs the FROM line uses",
    ),
    Rule(
        "IB002",
        W,
        "Base image without a tag, or tagged latest",
        "an untagged base means 'latest', which moves: the same Dockerfile builds a different image next month, "
        "and a cached build silently keeps the old base",
        "pin a tag (FROM debian:12-slim) or a digest (FROM debian@sha256:...)",
    ),
    Rule(
        "IB003",
        W,
        "Package manager cache left in the layer",
        "each RUN becomes a read-only layer: package lists and caches this RUN leaves behind ship in the image, "
        "and deleting them in a later RUN does not make the image any smaller",
        "clean up in the same RUN: 'apt-get update && apt-get install -y --no-install-recommends PKG && "
        "rm -rf /var/lib/apt/lists/*', 'apk add --no-cache PKG', 'dnf install -y PKG && dnf clean all'",
    ),
    Rule(
        "IB004",
        W,
        "Upgrading all packages in a build",
        "an upgrade makes the image depend on the day it was built, and the upgraded files are a second copy in "
        "a new layer on top of the base's read-only ones",
        "use a newer base image tag; install only the packages you need",
    ),
    Rule(
        "IB005",
        W,
        "cd in RUN instead of WORKDIR",
        "a cd lasts only until its RUN ends; WORKDIR sets the directory for every later instruction and for the "
        "container, so no step depends on a cd it cannot see",
        "set the directory with WORKDIR /path, then RUN the command",
    ),
    Rule(
        "IB006",
        W,
        "Relative WORKDIR",
        "a relative WORKDIR is taken from the previous one, which may come from the base image: where files land "
        "then depends on something the Dockerfile does not show",
        "use an absolute path: WORKDIR /app",
    ),
    Rule(
        "IB007",
        INFO,
        "ADD where COPY would do",
        "ADD also downloads URLs and unpacks archives; for plain files COPY does the same and says exactly what "
        "happens",
        "use COPY; keep ADD for a local tar archive to unpack or a URL to fetch",
    ),
    Rule(
        "IB008",
        W,
        "COPY of the whole context before installing dependencies",
        "the layer cache is reused only until an instruction's inputs change: once COPY . has taken the whole "
        "context, an edit to any file reruns every dependency install after it",
        "COPY only the dependency files (requirements.txt, package.json and its lock file, go.mod and go.sum...) "
        "first, install, then COPY . for the rest",
    ),
    Rule(
        "IB009",
        INFO,
        "Consecutive RUN instructions",
        "every RUN makes a layer: steps that belong together add layers, and a file one RUN writes stays in the "
        "image even when the next RUN deletes it",
        "join the commands with && in one RUN (continue long lines with \\)",
    ),
    Rule(
        "IB010",
        E,
        "A secret in ENV or ARG",
        "ENV values are stored in the image config and ARG values in the history of each RUN after them; layers "
        "and history are read-only, so anyone with the image can read them and no later step removes them",
        "pass secrets at run time (environment or a mounted file), or to one step with RUN --mount=type=secret",
    ),
    Rule(
        "IB011",
        W,
        "More than one CMD or ENTRYPOINT in a stage",
        "only the last CMD (or ENTRYPOINT) of a stage takes effect; an earlier one is dead code that misleads readers",
        "keep only the one you mean",
    ),
    Rule(
        "IB012",
        W,
        "Shell-form CMD or ENTRYPOINT",
        "the shell form runs the program under /bin/sh -c: the shell is PID 1 and does not pass SIGTERM on, so "
        "stopping the container waits for the timeout and then kills it",
        'use the JSON (exec) form: CMD ["program", "arg"]',
    ),
    Rule(
        "IB013",
        E,
        "EXPOSE of an invalid port",
        "EXPOSE declares container ports, 1 to 65535 with tcp, udp or sctp; anything else fails the build, and "
        "host ports are chosen at run time, not in the image",
        "write EXPOSE 8080 or EXPOSE 8080/udp; map host ports with run -p HOST:CONTAINER",
    ),
    Rule(
        "IB014",
        W,
        "sudo in RUN",
        "build steps already run as root unless USER says otherwise; sudo must be installed for nothing and hides "
        "which user a step really runs as",
        "drop sudo; put USER root before the steps that need root and USER app after them",
    ),
    Rule(
        "IB015",
        W,
        "The final stage runs as root",
        "a container runs as the image's last USER; as root, anyone who takes over the application is root in "
        "the container and on every volume it mounts",
        "create a user and end the final stage with USER app (or USER 1000:1000)",
    ),
    Rule(
        "IB016",
        E,
        "COPY source excluded by .dockerignore",
        "the build sees only the context minus what .dockerignore excludes, so this COPY fails or copies less "
        "than it names",
        "remove the pattern from .dockerignore (or add a !exception after it), or stop copying the path",
    ),
    Rule(
        "IB017",
        W,
        "Large build context without .dockerignore",
        "the whole build context is read before the first step of every build, and COPY . puts all of it in a "
        "layer; most of a large context is seldom needed in the image",
        "add a .dockerignore listing what the image does not need (the context summary shows what it would save)",
    ),
    Rule(
        "IB018",
        E,
        "Malformed .dockerignore pattern",
        "a .dockerignore with a pattern docker cannot read makes every build of the context fail before its first step",
        "correct the pattern: escape a literal [ or \\ with \\, and give ! a pattern to bring back",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in ALL_RULES}
