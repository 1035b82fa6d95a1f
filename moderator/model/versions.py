"""Identify model components: package versions and short digests of weight files.

Every identifier built here ends up in ``ModelInfo``: changing any component changes the model
version, which is part of the score cache key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path


def package_version(distribution: str) -> str:
    """Installed version of a distribution, or ``unknown`` when it is not installed as a package."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """First 10 hex digits of the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()[:10]


def directory_digest(directory: Path) -> str:
    """Digest of a model directory: config files by content, weight files by name and size.

    Hashing multi-hundred-megabyte weights at every start-up would cost seconds; a changed
    checkpoint virtually always changes a config or a file size.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = file.relative_to(directory).as_posix()
        digest.update(relative.encode())
        if file.suffix in {".json", ".txt", ".model", ".jinja"}:
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()[:10]


def combined_version(parts: Mapping[str, str]) -> str:
    """A short version string that changes whenever any named part changes."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:12]
