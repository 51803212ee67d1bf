"""Files written so that a crash never leaves half of one: atomic writes, files published together, the
folders a write would make, whether a folder can be written into at all, digests and the code version. Standard
library only.

Every file is written to a temporary file in the same folder, synced, renamed over the target, and the folder
is synced (`atomic_write_bytes`); files that belong together (a teacher and its card) are staged and published
together (`publish_together`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames and new names in directory `path` durable: an atomic rename survives a crash only once
    its directory is synced. A no-op where a directory cannot be opened or synced (some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def directory_problem(path: str | os.PathLike) -> str | None:
    """Why directory `path` cannot be created or written into, as far as the file types and permission bits say
    (a file in the way, no permission), or None. Creates nothing; output_folder_problem also tries it."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def output_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into `folder` (made if missing), or None. Tried for real, after the cheap
    directory_problem: the missing folders are made and a temporary file is created in the deepest, then both are
    removed again. So a folder that cannot be made although its parent's permission bits allow writing (under
    /proc, on a read-only mount) is found before any work, and nothing is left behind either way."""
    problem = directory_problem(folder)
    if problem:
        return problem
    folder = Path(folder).absolute()
    made = missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gym-qwen-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot create {e.filename or folder}: {e.strerror or e}"
    finally:
        remove_empty_folders(made)
    return None


def require_output_folder(folder: str | os.PathLike, what: str, error: type[Exception]) -> None:
    """Raise `error` with one line, '<what>: cannot write there (<why>)', unless output_folder_problem(folder) is
    None. `what` names the setting, e.g. 'output=results/x.json'."""
    problem = output_folder_problem(folder)
    if problem:
        raise error(f"{what}: cannot write there ({problem})")


def atomic_write_bytes(path: str | os.PathLike, write) -> Path:
    """Call write(file_object) on a temp file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    made = missing_folders(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the result is an ordinary shareable file
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        remove_empty_folders(made)  # a failed write leaves no trace, not even the folders it made
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    fsync_dir(path.parent)
    return path


def missing_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    out = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def publish_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged file over its target (same folder), all or none: if a rename fails, every target
    replaced so far gets its previous content back (kept as a hard link, or a copy, until all are in place) and
    targets that did not exist are removed again. Targets never go missing in between. The folders are synced.
    Between two renames a crash can still leave the first published alone; a reader that must know checks a
    digest (a teacher's card holds its file's sha256)."""
    done: list[tuple[Path, Path | None]] = []  # (target, backup of its previous content, or None if new)
    try:
        for staged, target in pairs:
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.previous")
                if backup.exists():
                    backup.unlink()
                try:
                    os.link(target, backup)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(target, backup)
            try:
                os.replace(staged, target)
            except BaseException:
                if backup is not None:
                    backup.unlink()  # the target still holds its previous content
                raise
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            elif target.exists():
                target.unlink()
        raise
    finally:
        for folder in {target.parent for _, target in pairs}:
            fsync_dir(folder)
    for _, backup in done:
        if backup is not None:
            backup.unlink()


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the code (with '+dirty' for uncommitted changes), or 'unknown'. Read once per process:
    it names the code this process loaded, even if the checkout changes while a long run goes on."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
