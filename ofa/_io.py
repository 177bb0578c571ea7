"""Small file helpers: atomic writes, checksums."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir",
    "check_replaceable",
    "clean_leftovers",
    "read_json",
    "recover_replaced",
    "sha256_file",
    "write_json_atomic",
    "write_text_atomic",
]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place.

    The temporary is ``.NAME.PID-XXXX.tmp``; those of writers of ``path`` that died are removed
    first, so a killed write leaves nothing behind once ``path`` is written again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (:func:`write_text_atomic`); nothing is written if ``data`` is not
    JSON."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, *, what: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: {path} is missing") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{what}: {path} is not valid JSON ({error}); the file is corrupted"
        ) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _old_copies(target: Path) -> list[Path]:
    """``.NAME.old-PID`` beside ``target`` whose writer is gone (oldest first)."""
    prefix = f".{target.name}.old-"
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in target.parent.iterdir():
            pid = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                found.append(entry)
    return sorted(found, key=lambda p: p.lstat().st_mtime_ns)


def recover_replaced(target: str | os.PathLike) -> bool:
    """Put back the complete copy a writer moved aside when it died before moving the new one
    in (see :func:`atomic_dir` where one step cannot swap them); True when it did."""
    target = Path(target)
    if os.path.lexists(target):
        return False
    for old in _old_copies(target):
        with contextlib.suppress(FileNotFoundError, FileExistsError, OSError):
            os.rename(old, target)
            return True
    return False


def clean_leftovers(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries :func:`atomic_dir` left beside ``target`` when its writer died.

    Only our own names for this one output: ``.NAME.PID-XXXX.tmp`` / ``.NAME.old-PID`` whose
    process is gone, and ``.NAME.XXXX.tmp`` of earlier versions (which named no process). A
    complete copy moved aside by a writer that died before replacing it is put back first.
    """
    target = Path(target)
    parent, prefix = target.parent, f".{target.name}."
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    recover_replaced(target)
    for entry in parent.iterdir():
        name = entry.name
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if rest.endswith(".tmp"):
            head = rest[: -len(".tmp")]
            if "." in head:  # another file's temporary (.NAME.json.XXXX.tmp)
                continue
            pid = head.split("-", 1)[0] if "-" in head else ""
        elif rest.startswith("old-"):
            pid = rest[len("old-") :]
        else:
            continue
        if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
            continue  # a writer still at work
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def check_replaceable(
    target: str | os.PathLike,
    *,
    overwrite: bool,
    foreign: Callable[[Path], str | None],
    what: str,
) -> None:
    """Refuse (FileExistsError, nothing touched) to replace anything we did not write.

    ``target`` may be absent or an empty directory; else it must be an earlier output of ours
    (``foreign(target)`` returns None, or a short reason why it is not) and ``overwrite`` given.
    """
    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(
            f"{target} exists and is not a directory: nothing was changed; pick another path "
            "or move that file away"
        )
    if not any(target.iterdir()):
        return
    reason = foreign(target)
    if reason is not None:
        raise FileExistsError(
            f"{target} is not {what} written by ofa ({reason}): nothing was changed; pick "
            "another directory or move its contents away"
        )
    if not overwrite:
        raise FileExistsError(
            f"{target} already holds {what}: pass overwrite=True (--overwrite) to replace it, "
            "or pick another directory"
        )


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2: Any = None


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system or the file system cannot."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):  # glibc before 2.28, musl: no wrapper
            function = False
        else:
            function.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
            function.restype = ctypes.c_int
        _renameat2 = function
    if _renameat2 is False:
        return False
    paths = os.fsencode(first), os.fsencode(second)
    if _renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the kernel or this file system has no exchange
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only when the block succeeds.

    A crash inside the block leaves ``target`` as it was (absent, or the old complete copy),
    and so does one at any moment of the replacement: on Linux the two directories are swapped
    in one step; elsewhere the old copy is moved aside first, and put back by the next
    :func:`clean_leftovers` / :func:`recover_replaced` if the writer died before the new one
    was moved in. Temporaries of this target left by a writer that died are removed first.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists: pick another directory or allow overwrite"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    tmp = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp")
    )
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):  # tmp now holds the old copy, under a temporary's name
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
