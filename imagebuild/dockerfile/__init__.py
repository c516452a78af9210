"""Dockerfile parsing (text to instructions and stages, pure) and docker's variable expansion."""

from .errors import DockerfileError, ExpansionError
from .expand import expand, expand_words
from .model import Dockerfile, Heredoc, Instruction, KeyValue, Stage
from .parser import parse, parse_file
from .values import PortSpec, parse_duration_ns, parse_port_spec

__all__ = [
    "Dockerfile",
    "DockerfileError",
    "ExpansionError",
    "Heredoc",
    "Instruction",
    "KeyValue",
    "PortSpec",
    "Stage",
    "expand",
    "expand_words",
    "parse",
    "parse_duration_ns",
    "parse_file",
    "parse_port_spec",
]
