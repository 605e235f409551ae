"""Output files that are never lost or half-written: up-front checks, and staging beside the target.

Every file a run writes is first written into a staging folder created in the destination's own
folder (same filesystem, so the final ``os.replace`` is a rename and never a cross-device copy),
then moved into place by :meth:`Staging.commit`. A failed or interrupted run calls
:meth:`Staging.discard`: the staging folders (and any folder the run created) disappear and
files that existed before are left byte-identical.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

STAGING_PREFIX = ".vm-export-staging-"


class OutputPathError(OSError):
    """An output path cannot be written; the message names the path and the fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file (0644 under the usual umask 022)."""
    return 0o666 & ~_umask()


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path("/")


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output path that cannot be written.

    The write bits are read from the mode (not ``os.access``) so that a read-only file or folder
    is respected even by root."""
    if path.name in ("", ".", ".."):
        raise OutputPathError(f"{flag} {str(path)!r} is not a file name; pass a file path such as out/model.onnx")
    if os.path.lexists(path):
        st = os.stat(path) if path.exists() else os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{flag} {path} is a directory; pass a file path inside it, e.g. {path / 'out.file'}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{flag} {path} exists and is not a regular file; choose another path")
        if not st.st_mode & 0o222:
            raise OutputPathError(f"{flag} {path} is read-only (mode {stat.S_IMODE(st.st_mode):04o}); make it "
                                  f"writable (chmod u+w {path}) or choose another path")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise OutputPathError(f"{flag} {path}: {folder} is a file, not a folder; choose a path in a folder")
    mode = folder.stat().st_mode
    if not mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: folder {folder} is not writable; choose another folder or make it "
                              f"writable (chmod u+w {folder})")


def check_free_space(paths: list[Path], needed_bytes: int) -> None:
    """Refuse when the filesystem of the outputs has clearly less free space than the run needs."""
    folders = {_nearest_existing(p.parent) for p in paths}
    for folder in folders:
        free = shutil.disk_usage(folder).free
        if free < needed_bytes:
            raise OutputPathError(
                f"not enough disk space in {folder}: the outputs need about {needed_bytes / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB are free; free some space or write elsewhere (-o / --report)")


def refuse_collisions(paths: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Two outputs on one path, or an output on an input file, would silently destroy data."""
    seen: dict[str, str] = {}
    for label, path in paths.items():
        key = os.path.realpath(path)
        if key in seen:
            raise OutputPathError(f"{label} and {seen[key]} are the same file ({path}); give each output its own path")
        seen[key] = label
    for label, path in inputs.items():
        key = os.path.realpath(path)
        if key in seen:
            raise OutputPathError(f"{seen[key]} {path} would overwrite the {label}; choose another output path")


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    target = path or exc.filename or "an output file"
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {target}; free some space or write elsewhere (-o / --report)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write {target} ({exc.strerror}); choose a writable folder"
    return f"cannot write {target}: {exc.strerror or exc}; check the path and the disk"


class Staging:
    """Staged outputs: ``path_for(final)`` gives where to write; ``commit()`` moves all into place."""

    def __init__(self) -> None:
        self._dirs: dict[Path, Path] = {}  # destination folder -> its staging folder
        self._files: dict[Path, Path] = {}  # final path -> staged path
        self._created: list[Path] = []  # destination folders this run created (removed again on discard)

    def path_for(self, final: Path) -> Path:
        final = Path(final)
        parent = final.parent if str(final.parent) else Path(".")
        if parent not in self._dirs:
            missing = [p for p in (parent, *parent.parents) if not os.path.lexists(p)]
            parent.mkdir(parents=True, exist_ok=True)
            self._created.extend(missing)  # deepest first
            self._dirs[parent] = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
        staged = self._dirs[parent] / final.name
        self._files[final] = staged
        return staged

    def commit(self) -> list[Path]:
        """Move every staged file that was written to its destination (mode as a new file would get)."""
        done = []
        mode = usual_file_mode()
        for final, staged in self._files.items():
            if staged.exists():
                os.chmod(staged, mode)
                os.replace(staged, final)
                done.append(final)
        self._remove_staging()
        self._created.clear()
        return done

    def discard(self) -> None:
        self._remove_staging()
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        self._created.clear()

    def _remove_staging(self) -> None:
        for folder in self._dirs.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._dirs.clear()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, usual_file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_and_markdown(out_dir: Path, stem: str, data, markdown: str) -> tuple[Path, Path]:
    """``<stem>.json`` (``data``, indented) and ``<stem>.md`` in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    paths = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_bytes(paths[0], (json.dumps(data, indent=1) + "\n").encode())
    atomic_write_bytes(paths[1], markdown.encode())
    return paths
