"""Read policy YAML files into validated Policy objects, with errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moderator.policy.schema import Policy


class PolicyError(ValueError):
    """A policy file that cannot serve: the message names the file, line and field."""


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the YAML node tree along a pydantic error location; return the 1-based line reached."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def parse_policy(text: str, source: str) -> Policy:
    """Validate policy YAML text; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy must be a YAML mapping")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(policy)"
            lines.append(f"{source}:{_line_of(root, loc)}: {field}: {err['msg']}")
        raise PolicyError("\n".join(lines)) from exc


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file."""
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def load_policy_dir(directory: Path) -> dict[str, Policy]:
    """Every policy in a directory, by name. Raises PolicyError on the first invalid file."""
    policies: dict[str, Policy] = {}
    for path in sorted(directory.glob("*.y*ml")):
        policy = load_policy(path)
        if policy.name in policies:
            raise PolicyError(f"{path}:1: name: policy {policy.name!r} is defined twice")
        policies[policy.name] = policy
    if not policies:
        raise PolicyError(f"{directory}: no policy files (*.yaml)")
    return policies
