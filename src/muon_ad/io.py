"""Atomic file writing, for every layer: a file or folder is either the old one or the complete new one, never
half written.

Each writer writes a temporary file (or folder) in the target's folder (same filesystem) and `os.replace`s it
into place, so a crash, Ctrl-C or full disk mid-write leaves the previous version (or none) and no stray
temporary; a failed folder write (e.g. a full disk) is one line. What a kill -9 leaves, `.NAME.tmp*`, matches
`STALE_TEMPORARIES`, which a run removes from its folder at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from safetensors import SafetensorError

from muon_ad.errors import UserError

STALE_TEMPORARIES = ".*.tmp*"
CHECKSUMS = "checksums.json"


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(file)` on a temporary file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary, shareable files
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_folder_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(folder)` on a temporary folder next to `path`, then rename it to `path` (replacing any old one).

    Any failure removes the temporary folder; an OSError (a full disk, no permission) becomes a one-line
    UserError, with the previous `path` untouched."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise UserError(f"cannot write {final}: {reason} (any previous version is untouched)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Remove what writes killed half-way (kill -9, power loss) left in `folder`: they are never resumed from."""
    for stale in Path(folder).glob(STALE_TEMPORARIES):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def write_checksums(folder: str | os.PathLike) -> None:
    """Record the SHA-256 of every file of `folder` in `folder/checksums.json`, so a reader can tell a truncated
    or altered file from the one written."""
    folder = Path(folder)
    sums = {file.name: _sha256(file) for file in sorted(folder.iterdir()) if file.is_file()}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))


def checksum_problem(folder: str | os.PathLike, required: Iterable[str] = ()) -> str | None:
    """What is wrong with `folder` against its checksums.json (None when every listed file matches and every
    `required` file is listed), in a few words for a one-line message."""
    folder = Path(folder)
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
    except FileNotFoundError:
        return f"no {CHECKSUMS} (incomplete, or not written by this version)"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{CHECKSUMS} is not valid JSON"
    if missing := sorted(set(required) - set(sums)):
        return f"no {', '.join(missing)}"
    for name, digest in sums.items():
        file = folder / Path(name).name
        if not file.is_file() or _sha256(file) != digest:
            return f"{file.name} is missing or does not match its checksum"
    return None


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 over every file of `folder` (relative names and contents): the same bytes wherever the folder is
    copied to, and whenever, unlike its path or modification times."""
    folder, digest = Path(folder), hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{_sha256(file)}\n".encode())
    return digest.hexdigest()


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
