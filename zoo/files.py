"""Files written so that a reader sees the old content or the new, never half; and their checksums.

A base module like ``zoo.errors``: every layer writes files (checkpoints, run folders, reports, figures,
the results database's exports), so this imports nothing from the zoo.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only set it,
    which would briefly loosen it for other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def missing_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened, in words that fit after the path ("X does not exist"), or None when
    it can be: a symbolic link loop and a broken link are told apart from a file that does not exist (Python's
    ``Path.exists()`` answers False to all three, so a loop used to read as "does not exist")."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"is a symbolic link loop ({_link_chain(Path(path))}): point the link at a real file or remove it"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                return f"is a broken symbolic link: it points to {os.readlink(path)}, which does not exist"
            return "does not exist"
        return f"cannot be reached ({exc.strerror or exc})"


def _link_chain(path: Path, limit: int = 8) -> str:
    """``a → b → a``: the links followed from ``path`` until one repeats (at most ``limit``)."""
    seen: list[str] = [str(path)]
    current = path
    for _ in range(limit):
        try:
            target = os.readlink(current)
        except OSError:
            break
        current = (current.parent / target) if not os.path.isabs(target) else Path(target)
        current = Path(os.path.normpath(current))
        seen.append(str(current))
        if str(current) in seen[:-1]:
            break
    return " → ".join(seen)


def free_bytes(path: str | Path) -> int | None:
    """Bytes a non-root writer may still use on the file system holding ``path`` (its nearest existing
    folder); None where the system does not say."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize
