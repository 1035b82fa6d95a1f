"""Read policy YAML files into validated policies, with errors that name file, line and field.

A directory is loaded as one ``PolicySet``: every file is checked and every problem reported (not
only the first), so `moderator policy validate` gives a policy repository's CI the whole list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moderator.policy.policyset import PolicySet
from moderator.policy.schema import Loc, Policy, PolicyProblems


class PolicyError(ValueError):
    """Policy files that cannot serve: one line per problem, each naming file, line and field."""


@dataclass(frozen=True)
class PolicySource:
    """A validated policy with the text and YAML node tree it came from (for line numbers and diffs)."""

    policy: Policy
    source: str
    text: str
    root: yaml.Node

    def where(self, loc: Loc) -> str:
        """``file:line`` of a field."""
        return f"{self.source}:{line_of(self.root, loc)}"


def line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """Walk the YAML node tree along an error location; return the 1-based line reached.

    Parts that are not keys of the mapping at hand (pydantic's union tags) are skipped.
    """
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:
                continue
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def field_path(loc: Loc) -> str:
    """A readable field path: ``rules[3].when.all[0].gte`` (union tags left out)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.endswith("-condition"):
            path += f".{part}" if path else part
    return path or "(policy)"


def _duplicate_keys(node: yaml.Node, source: str) -> list[str]:
    """PyYAML keeps the last of two equal keys silently; a policy editor must hear about it."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            if key.value in seen:
                problems.append(f"{source}:{key.start_mark.line + 1}: {key.value}: duplicate key")
            seen.add(key.value)
            problems += _duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, source)
    return problems


def _messages(exc: ValidationError, source: str, root: yaml.Node) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        problem = err.get("ctx", {}).get("error")
        if isinstance(problem, PolicyProblems):
            for loc, msg in problem.problems:
                lines.append(f"{source}:{line_of(root, loc)}: {field_path(loc)}: {msg}")
            continue
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}:{line_of(root, loc)}: {field_path(loc)}: {msg}")
    return lines


def parse_policy_source(text: str, source: str) -> PolicySource:
    """Validate policy YAML text; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if root is None or not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy must be a YAML mapping")
    problems = _duplicate_keys(root, source)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems += _messages(exc, source, root)
    if problems:
        raise PolicyError("\n".join(problems))
    return PolicySource(policy, source, text, root)


def parse_policy(text: str, source: str) -> Policy:
    """Validate policy YAML text into a Policy."""
    return parse_policy_source(text, source).policy


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file (on its own: no inheritance from a default)."""
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory, in the order policies are considered."""
    return sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def build_policy_set(sources: list[PolicySource], origin: str) -> PolicySet:
    """Check the policies together (names, one default, inheritance, shadows) and resolve them."""
    problems: list[str] = []
    by_name: dict[str, PolicySource] = {}
    for src in sources:
        if src.policy.name in by_name:
            problems.append(f"{src.where(('name',))}: name: policy {src.policy.name!r} is also defined in "
                            f"{by_name[src.policy.name].source}")
        else:
            by_name[src.policy.name] = src
    flagged = [s for s in by_name.values() if s.policy.default]
    if len(flagged) > 1:
        problems += [f"{s.where(('default',))}: default: more than one policy is the default" for s in flagged[1:]]
    default = flagged[0] if flagged else by_name.get("default")
    if default is None:
        problems.append(f"{origin}: no default policy (mark one `default: true` or name it `default`)")
        raise PolicyError("\n".join(problems))
    if default.policy.shadow_of is not None or default.policy.applies_when is not None:
        problems.append(f"{default.where(('name',))}: name: the default policy cannot be a shadow or selective")
    if not default.policy.categories:
        problems.append(f"{default.where(('categories',))}: categories: the default policy declares the categories")
    for src in by_name.values():
        if src is default:
            continue
        policy = src.policy
        for field in ("categories", "neutral_prompts"):
            if field in policy.model_fields_set:
                problems.append(f"{src.where((field,))}: {field}: only the default policy declares {field} "
                                f"(the model scores one set); this policy inherits them")
        for loc, msg in policy.problems(inherited=default.policy.categories):
            problems.append(f"{src.where(loc)}: {field_path(loc)}: {msg}")
        target = policy.shadow_of
        if target is not None and (target not in by_name or by_name[target].policy.shadow_of is not None):
            problems.append(f"{src.where(('shadow_of',))}: shadow_of: {target!r} is not a live policy")
    if problems:
        raise PolicyError("\n".join(problems))
    base = default.policy
    resolved = {
        name: src.policy if src is default else src.policy.model_copy(
            update={"categories": base.categories, "neutral_prompts": base.neutral_prompts})
        for name, src in by_name.items()
    }
    return PolicySet(resolved, base.name, {name: src.text for name, src in by_name.items()},
                     {name: src.source for name, src in by_name.items()})


def load_policy_set(directory: Path) -> PolicySet:
    """Every policy of a directory as one checked set. Raises PolicyError listing every problem."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: not a directory")
    sources: list[PolicySource] = []
    errors: list[str] = []
    for path in policy_files(directory):
        try:
            sources.append(parse_policy_source(path.read_text(encoding="utf-8"), str(path)))
        except PolicyError as exc:
            errors.append(str(exc))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: cannot read: {exc}")
    if not sources and not errors:
        errors.append(f"{directory}: no policy files (*.yaml)")
    if errors:
        raise PolicyError("\n".join(errors))
    return build_policy_set(sources, str(directory))


def load_policy_dir(directory: Path) -> dict[str, Policy]:
    """Every policy in a directory by name (inherited categories resolved). Raises PolicyError."""
    return dict(load_policy_set(directory).policies)


def load_candidate(path: Path, directory: Path | None) -> tuple[PolicySet, Policy]:
    """A policy file as it would serve: in place of its namesake among ``directory``'s policies.

    With no other policy to join (no directory, or an empty one), the file stands alone as its own
    default and must declare its categories.
    """
    candidate = parse_policy_source(path.read_text(encoding="utf-8"), str(path))
    name = candidate.policy.name
    others: list[PolicySource] = []
    if directory is not None and directory.is_dir():
        for other in policy_files(directory):
            if other.resolve() != path.resolve():
                src = parse_policy_source(other.read_text(encoding="utf-8"), str(other))
                if src.policy.name != name:
                    others.append(src)
    if others:
        policy_set = build_policy_set([*others, candidate], str(directory))
        return policy_set, policy_set.policies[name]
    if not candidate.policy.categories:
        raise PolicyError(f"{path}:1: categories: this policy inherits its categories, but no default policy "
                          f"was found to inherit them from (give --policy-dir)")
    alone = candidate.policy.model_copy(update={"default": True, "applies_when": None, "shadow_of": None})
    return PolicySet({name: alone}, name, {name: candidate.text}, {name: candidate.source}), alone
