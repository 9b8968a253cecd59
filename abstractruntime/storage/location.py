"""Which store a command means, found the way git finds ``.git``: :func:`locate_store`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..core.errors import StoreNotFoundError
from ..core.fastclass import dataclass

__all__ = ["DEFAULT_STORE_DIR", "STORE_ENV", "StoreLocation", "default_store_path", "find_store", "locate_store"]

DEFAULT_STORE_DIR = ".abstractruntime"
STORE_ENV = "ABSTRACTRUNTIME_STORE"


@dataclass(frozen=True)
class StoreLocation:
    """Where the store is (or would be created) and how that was decided.

    ``source`` is ``"option"`` (an explicit path), ``"env"`` (``$ABSTRACTRUNTIME_STORE``),
    ``"found"`` (a ``.abstractruntime`` directory in the start directory or a parent) or
    ``"default"`` (none found: ``<start>/.abstractruntime``, not created yet).
    """

    path: Path
    source: str
    searched: tuple[Path, ...] = ()

    @property
    def exists(self) -> bool:
        """Whether the store directory is there."""
        return self.path.is_dir()

    def describe(self) -> str:
        """Where the store came from, for messages."""
        return {"option": "--store", "env": f"${STORE_ENV}"}.get(self.source, "")


def locate_store(explicit: Optional[str | os.PathLike[str]] = None, *,
                 start: Optional[str | os.PathLike[str]] = None) -> StoreLocation:
    """Decide which store a command means, the way git finds ``.git``.

    ``explicit``, else ``$ABSTRACTRUNTIME_STORE``, else the nearest ``.abstractruntime``
    directory in ``start`` (default: the current directory) or one of its parents, else
    ``<start>/.abstractruntime`` (source ``"default"``). Nothing is created.
    """
    if explicit:
        return StoreLocation(Path(explicit), "option", (Path(explicit),))
    env = os.environ.get(STORE_ENV)
    if env:
        return StoreLocation(Path(env), "env", (Path(env),))
    here = Path(start) if start is not None else Path.cwd()
    here = here.absolute()
    searched: list[Path] = []
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_STORE_DIR
        searched.append(candidate)
        if candidate.is_dir():
            return StoreLocation(candidate, "found", tuple(searched))
    return StoreLocation(here / DEFAULT_STORE_DIR, "default", tuple(searched))


def find_store(explicit: Optional[str | os.PathLike[str]] = None, *,
               start: Optional[str | os.PathLike[str]] = None) -> Path:
    """The path of an existing store (see :func:`locate_store`); ``StoreNotFoundError`` if none."""
    location = locate_store(explicit, start=start)
    if not location.exists:
        raise StoreNotFoundError(_missing_message(location), path=str(location.path),
                                 searched=[str(p) for p in location.searched])
    return location.path


def _missing_message(location: StoreLocation) -> str:
    if location.source in ("option", "env"):
        return f"no store at {location.path} (from {location.describe()})"
    first, last = location.searched[0], location.searched[-1]
    where = str(first) if first == last else f"{first} and every parent up to {last}"
    return f"no store found: looked for {where}; give --store DIR or set ${STORE_ENV}"


def default_store_path(explicit: Optional[str | os.PathLike[str]] = None) -> Path:
    """``explicit``, else ``$ABSTRACTRUNTIME_STORE``, else the nearest ``.abstractruntime``
    up from the current directory, else ``./.abstractruntime``."""
    location = locate_store(explicit)
    return Path(DEFAULT_STORE_DIR) if location.source == "default" else location.path
