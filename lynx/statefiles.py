"""How files in the state folder ``.lynx/`` (and ``.lynx_pid.json``) are opened, read and replaced.

A project folder may be shared, copied or planted: Lynx trusts a ``.lynx/`` only if you or root
own it (or it is a setgid folder of a group you are in, set up for sharing), never follows a
symbolic link to a file in it, opens only regular files there (a FIFO would hang the reader, a
device would never end), reads them with a size bound, and creates files with the modes your
umask gives (a shared group folder under ``umask 002`` stays writable to the group).

The lowest floor of the state rooms: it imports nothing of Lynx's, so the run history can use it
without slowing a one-shot run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading

STATE_DIR = ".lynx"
# A scheduler record is a few KiB; a history line a few KiB (a long argv: a few MiB at most).
MAX_RECORD_BYTES = 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class StateFileError(OSError):
    """A file or folder of the state Lynx will not use; ``strerror`` says why in words."""


def state_dir(directory: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.join(os.fspath(directory), STATE_DIR))


def check_owner(directory: str | os.PathLike[str]) -> None:
    """Refuse the ``.lynx/`` of ``directory`` if someone else controls it (no ``.lynx/`` yet: fine).

    Raises:
        StateFileError: it belongs to a user who is neither you nor root, and is no shared group folder.
    """
    folder = state_dir(directory)
    try:
        status = os.stat(folder)
    except OSError:
        return  # not there (it will be yours), or unusable: opening a file in it says why
    if status.st_uid in (os.getuid(), 0) or _shared_with_you(status):
        return
    raise StateFileError(
        errno.EPERM,
        f"{folder} belongs to user {_user_name(status.st_uid)}, not to you or root; "
        "Lynx neither reads nor writes a state folder someone else controls",
        folder,
    )


def _shared_with_you(status: os.stat_result) -> bool:
    """A folder set up for a group to share (setgid, group-writable) of a group you are in."""
    shared = status.st_mode & stat.S_ISGID and status.st_mode & stat.S_IWGRP
    return bool(shared) and (status.st_gid == os.getegid() or status.st_gid in os.getgroups())


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """``os.open`` for a regular file only, never through a symbolic link; new files get ``mode`` less the umask.

    Raises:
        StateFileError: ``path`` is a symbolic link, a FIFO, a device, a directory or a socket.
        OSError: it cannot be opened (FileNotFoundError when it is not there and not created).
    """
    path = os.fspath(path)
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        before = None
        if not flags & os.O_CREAT:
            raise
    if before is not None and not stat.S_ISREG(before.st_mode):
        # Not even opened: opening a FIFO or a device can block, or do something.
        raise _not_regular(path, before.st_mode)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:  # made a link since the look
            raise _not_regular(path, stat.S_IFLNK) from None
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            raise _not_regular(path, now.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_regular(path: str, mode: int) -> StateFileError:
    return StateFileError(errno.EINVAL, f"it is {describe_kind(mode)}, not a regular file", path)


def describe_kind(mode: int) -> str:
    """What a non-regular file is, in words: 'a FIFO', 'a symbolic link', ..."""
    for test, words in (
        (stat.S_ISLNK, "a symbolic link (Lynx follows none here)"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def read_bounded(path: str | os.PathLike[str], limit: int = MAX_RECORD_BYTES) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes.

    Raises:
        StateFileError: it is no regular file, or larger than ``limit``.
        OSError: it cannot be read (FileNotFoundError when it is not there).
    """
    fd = open_regular(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size > limit:
            raise StateFileError(errno.EFBIG, f"it is larger than {limit} bytes", os.fspath(path))
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # grew while read
            raise StateFileError(errno.EFBIG, f"it is larger than {limit} bytes", os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def replace_atomically(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` by a new file holding ``data`` (temp file + ``os.replace``), mode 0666 less the umask.

    The temp file is created exclusively and never through a link, so nothing planted at its
    name is written to. A short write (a full disk) is never moved into place.

    Args:
        durable: fsync before the replace; updates that the next one supersedes skip it.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    # Named after this process and thread: no other writer can share it, and no random name is needed.
    temp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    try:
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:  # left by a killed process of this PID, or planted: never written through
            os.unlink(temp)
            fd = os.open(temp, flags, 0o666)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if not written:
                    raise OSError(errno.ENOSPC, "no space left on the device")
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
