"""The state a build carries from step to step: layers so far, the image config, variables, the cache key."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from imagebuild.oci import ContainerConfig, History
from imagebuild.store.images import Image, Layer
from imagebuild.store.layerblobs import LocalLayer

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class StageState:
    layers: list[Layer | LocalLayer] = field(default_factory=list)  # LocalLayer: built here, its blob maybe not made
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: list[History] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # ARG values in scope
    key: str = ""  # the cache chain: what every step so far was and saw
    created: str | None = None  # when the newest layer so far was made (a reused step's: when it was built)
    steps: list[tuple[str, Layer | LocalLayer, str]] = field(default_factory=list)  # (key, layer, created): --cache-to

    @classmethod
    def from_image(cls, image: Image | None) -> StageState:
        if image is None:
            return cls(config=ContainerConfig(env=[f"PATH={DEFAULT_PATH}"]), key=sha("scratch"))
        config = dataclasses.replace(image.config.config, on_build=[])
        layers: list[Layer | LocalLayer] = list(image.layers)
        return cls(layers, config, list(image.config.history), {}, sha(image.id), image.config.created)

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.config.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def set_env(self, key: str, value: str) -> None:
        env = self.env
        env[key] = value
        self.config.env = [f"{k}={v}" for k, v in env.items()]

    @property
    def scope(self) -> dict[str, str]:
        """What $VAR expands to: the build args in scope, then the environment (ENV wins, as in docker)."""
        return {**self.args, **self.env}

    def advance(self, *parts: str) -> str:
        self.key = sha(self.key, *parts)
        return self.key


def sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()
