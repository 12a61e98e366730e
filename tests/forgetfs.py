"""A filesystem that forgets what was not fsynced, mounted with FUSE: the power cut of tests/test_powercut.py.

The model it implements (the strictest reading of POSIX, the idea of Jepsen's LazyFS):

- Files and folders are inodes held in memory. What a process does (create,
  write, truncate, mkdir, rename, unlink, rmdir) changes the *live* state,
  which every process sees at once, as a page cache shows it.
- ``fsync``/``fdatasync`` of a file makes its whole content at that moment
  durable: the inode's *durable content*.
- ``fsync`` of a folder makes its entries at that moment durable: which names
  it holds and which inode each names, not those inodes' content.
- A power cut (:meth:`ForgetfulFs.cut`: the daemon unmounted, the live state
  dropped, mounted again) keeps exactly the durable state. From the root (the
  mount point, always there) each folder holds the entries of its last fsync
  (none if it was never fsynced) and each file the content of its last fsync
  (empty if never). Whatever cannot be reached so is gone.

So a write is lost until its file is fsynced; a new file or folder, a rename
and an unlink are lost until the folder holding the entry is fsynced (a new
folder's entry lives in its *parent*); a file whose entry is durable but whose
content never was comes back empty. Not modelled: torn writes (a cut drops
every unsynced write whole), partial survival of unsynced state, ownership,
modes and times (never durable concerns of the runner), hard and symbolic links.

The daemon runs in a process of its own (``python forgetfs.py MOUNT STATE``):
it loads the durable state from ``STATE`` if the file exists, serves until the
mount is unmounted, then saves the durable state, and only it, to ``STATE``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = 1


@dataclass
class Node:
    """A live inode."""

    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Durable:
    """What survives a cut: each inode's mode, and the content or entries of its last fsync."""

    modes: dict[int, int] = field(default_factory=lambda: {ROOT: stat.S_IFDIR | 0o755})
    contents: dict[int, bytes] = field(default_factory=dict)
    entries: dict[int, dict[str, int]] = field(default_factory=dict)
    next_ino: int = ROOT + 1


class Model:
    """The live state and the durable state, and the operations on paths that change them."""

    def __init__(self, durable: Durable | None = None) -> None:
        self.durable = durable or Durable()
        self.nodes: dict[int, Node] = {}
        self.handles: dict[int, int] = {}
        self._next_fh = 1
        self._restore()

    def _restore(self) -> None:
        """The live state a cut leaves: only what is reachable through durable entries, with durable content."""
        durable = self.durable
        reachable: dict[int, Node] = {}
        pending = [ROOT]
        while pending:
            ino = pending.pop()
            if ino in reachable:
                continue
            mode = durable.modes[ino]
            node = Node(mode)
            if stat.S_ISDIR(mode):
                node.entries = dict(durable.entries.get(ino, {}))
                pending.extend(node.entries.values())
            else:
                node.data = bytearray(durable.contents.get(ino, b""))
            reachable[ino] = node
        # Forget what no durable entry leads to, so that the saved state stays small.
        durable.modes = {ino: mode for ino, mode in durable.modes.items() if ino in reachable}
        durable.contents = {ino: data for ino, data in durable.contents.items() if ino in reachable}
        durable.entries = {ino: entries for ino, entries in durable.entries.items() if ino in reachable}
        self.nodes = reachable
        self.handles = {}

    def cut(self) -> None:
        """Drop every change that was not made durable."""
        self._restore()

    # -- lookups

    def lookup(self, path: str) -> int:
        ino = ROOT
        for name in _parts(path):
            node = self.nodes[ino]
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            try:
                ino = node.entries[name]
            except KeyError:
                raise OSError(errno.ENOENT, path) from None
        return ino

    def _parent(self, path: str) -> tuple[Node, str]:
        parts = _parts(path)
        if not parts:
            raise OSError(errno.EBUSY, path)
        parent = self.nodes[self.lookup("/" + "/".join(parts[:-1]))]
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, path)
        return parent, parts[-1]

    def _node(self, path: str | None, fh: int | None) -> tuple[int, Node]:
        ino = self.handles[fh] if fh else self.lookup(path or "/")
        return ino, self.nodes[ino]

    def _new(self, mode: int) -> int:
        ino = self.durable.next_ino
        self.durable.next_ino += 1
        # The kind of an inode never changes: recorded at once, it is only ever read for a durable entry.
        self.durable.modes[ino] = mode
        self.nodes[ino] = Node(mode)
        return ino

    def _handle(self, ino: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = ino
        return fh

    # -- what processes do: the live state only

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        _ino, node = self._node(path, fh)
        links = 2 + sum(self.nodes[i].is_dir for i in node.entries.values()) if node.is_dir else 1
        return {
            "st_mode": node.mode,
            "st_nlink": links,
            "st_size": len(node.data),
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
        }

    def readdir(self, path: str | None, fh: int | None) -> list[str]:
        _ino, node = self._node(path, fh)
        return [".", "..", *node.entries]

    def mkdir(self, path: str, mode: int) -> None:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise OSError(errno.EEXIST, path)
        parent.entries[name] = self._new(stat.S_IFDIR | (mode & 0o7777))

    def create(self, path: str, mode: int) -> int:
        parent, name = self._parent(path)
        if name not in parent.entries:
            parent.entries[name] = self._new(stat.S_IFREG | (mode & 0o7777))
        return self._handle(parent.entries[name])

    def open(self, path: str) -> int:
        return self._handle(self.lookup(path))

    def opendir(self, path: str) -> int:
        return self._handle(self.lookup(path))

    def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    def read(self, path: str | None, size: int, offset: int, fh: int | None) -> bytes:
        return bytes(self._node(path, fh)[1].data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int | None) -> int:
        node = self._node(path, fh)[1]
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = time.time_ns()
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        node = self._node(path, fh)[1]
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.mtime_ns = time.time_ns()

    def unlink(self, path: str) -> None:
        parent, name = self._parent(path)
        if name not in parent.entries:
            raise OSError(errno.ENOENT, path)
        if self.nodes[parent.entries[name]].is_dir:
            raise OSError(errno.EISDIR, path)
        # The inode stays while a process holds it open, as on a real filesystem.
        del parent.entries[name]

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        if name not in parent.entries:
            raise OSError(errno.ENOENT, path)
        if self.nodes[parent.entries[name]].entries:
            raise OSError(errno.ENOTEMPTY, path)
        del parent.entries[name]

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        if old_name not in old_parent.entries:
            raise OSError(errno.ENOENT, old)
        moved = old_parent.entries[old_name]
        replaced = new_parent.entries.get(new_name)
        if replaced is not None and replaced != moved:
            if self.nodes[replaced].is_dir and self.nodes[replaced].entries:
                raise OSError(errno.ENOTEMPTY, new)
            if self.nodes[replaced].is_dir != self.nodes[moved].is_dir:
                raise OSError(errno.EISDIR if self.nodes[replaced].is_dir else errno.ENOTDIR, new)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = moved

    # -- what makes state durable

    def fsync(self, path: str | None, fh: int | None) -> None:
        ino, node = self._node(path, fh)
        if node.is_dir:
            self.durable.entries[ino] = dict(node.entries)
        else:
            self.durable.contents[ino] = bytes(node.data)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def serve(mount: Path, state: Path) -> None:
    """Mount the model on ``mount`` in the foreground; on unmount, save its durable state to ``state``."""
    import mfusepy

    durable = pickle.loads(state.read_bytes()) if state.exists() else None
    model = Model(durable)

    class Operations(mfusepy.Operations):
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            return _call(model.getattr, path, fh)

        def readdir(self, path: str, fh: int) -> list[str]:
            return _call(model.readdir, path, fh)

        def mkdir(self, path: str, mode: int) -> int:
            _call(model.mkdir, path, mode)
            return 0

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            return _call(model.create, path, mode)

        def open(self, path: str, flags: int) -> int:
            return _call(model.open, path)

        def opendir(self, path: str) -> int:
            return _call(model.opendir, path)

        def release(self, path: str, fh: int) -> int:
            model.release(fh)
            return 0

        def releasedir(self, path: str, fh: int) -> int:
            model.release(fh)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return _call(model.read, path, size, offset, fh)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return _call(model.write, path, data, offset, fh)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            _call(model.truncate, path, length, fh)
            return 0

        def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
            if mode:
                raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
            if offset + size > model.getattr(path, fh)["st_size"]:
                _call(model.truncate, path, offset + size, fh)
            return 0

        def unlink(self, path: str) -> int:
            _call(model.unlink, path)
            return 0

        def rmdir(self, path: str) -> int:
            _call(model.rmdir, path)
            return 0

        def rename(self, old: str, new: str) -> int:
            _call(model.rename, old, new)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            _call(model.fsync, path, fh)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            _call(model.fsync, path, fh)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def chmod(self, path: str, mode: int) -> int:
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            return 0

        def access(self, path: str, amode: int) -> int:
            _call(model.lookup, path)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            blocks = 1 << 24  # 64 GiB of 4 KiB blocks, all free: the runner checks the space it has
            return {
                "f_bsize": 4096,
                "f_frsize": 4096,
                "f_blocks": blocks,
                "f_bfree": blocks,
                "f_bavail": blocks,
                "f_files": 1 << 20,
                "f_ffree": 1 << 20,
                "f_favail": 1 << 20,
                "f_namemax": 255,
            }

    def _call(method, *args):  # type: ignore[no-untyped-def]
        try:
            return method(*args)
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno) from None
        except KeyError:
            raise mfusepy.FuseOSError(errno.EBADF) from None

    # Ends with the test process however that ends (PR_SET_PDEATHSIG), and auto_unmount has
    # fusermount3 take the mount away when it does: a killed test run leaves no mount behind.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    # Single-threaded: the model needs no lock. hard_remove: an unlinked open file keeps its inode,
    # not a .fuse_hidden file in the folder (which would be an entry of its own).
    mfusepy.FUSE(
        Operations(),
        str(mount),
        foreground=True,
        nothreads=True,
        hard_remove=True,
        auto_unmount=True,
        fsname="forgetfs",
    )
    model.cut()
    temporary = state.with_name(state.name + ".new")
    temporary.write_bytes(pickle.dumps(model.durable))
    os.replace(temporary, state)


def unavailable() -> str | None:
    """Why a FUSE mount cannot be made here; ``None`` when it can."""
    if not Path("/dev/fuse").exists():
        return "FUSE is missing: no /dev/fuse (in a container, run it with --device /dev/fuse)"
    if shutil.which("fusermount3") is None:
        return "FUSE is missing: no fusermount3 (Debian: apt-get install fuse3; .ci/install-fuse does it)"
    try:
        import mfusepy  # noqa: F401 - loads libfuse
    except (ImportError, OSError) as exc:
        return f"FUSE is missing: mfusepy cannot load libfuse ({exc}; Debian: apt-get install libfuse3-3)"
    return None


class ForgetfulFs:
    """A mounted :class:`Model` in a daemon process of its own, with its durable state in ``state``."""

    def __init__(self, mount: Path, state: Path, log: Path) -> None:
        self.mount = mount
        self.state = state
        self.log = log
        self.cuts = 0
        self._daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self._daemon = subprocess.Popen(
                [sys.executable, __file__, str(self.mount), str(self.state)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while not os.path.ismount(self.mount):
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"forgetfs did not mount {self.mount}:\n{self.log.read_text()}")
            time.sleep(0.02)

    def unmount(self) -> None:
        """Unmount; the daemon saves the durable state and exits. Every process using the mount must be gone."""
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(["fusermount3", "-u", str(self.mount)], capture_output=True, text=True)
            if done.returncode == 0 or not os.path.ismount(self.mount):
                break
            # A killed process's files are released a moment after it is reaped.
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot unmount {self.mount}: {done.stderr}")
            time.sleep(0.05)
        assert self._daemon is not None
        code = self._daemon.wait(15)
        self._daemon = None
        assert code == 0, f"forgetfs exited with {code}:\n{self.log.read_text()}"

    def cut(self) -> None:
        """The power cut: unmount, drop what was not durable, mount again on what survived."""
        self.unmount()
        self.cuts += 1
        self.start()

    def stop(self) -> None:
        """Unmount whatever happens (lazily if it is still busy) and end the daemon; leaves no mount behind."""
        if os.path.ismount(self.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True)
        if self._daemon is not None:
            try:
                self._daemon.wait(10)
            except subprocess.TimeoutExpired:
                self._daemon.send_signal(signal.SIGKILL)
                self._daemon.wait()
            self._daemon = None
        if os.path.ismount(self.mount):
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


@contextmanager
def forgetful_fs(folder: Path) -> Iterator[ForgetfulFs]:
    """A fresh, empty forgetful filesystem mounted at ``folder / "mnt"``; unmounted at the end, however it ends."""
    mount = folder / "mnt"
    mount.mkdir()
    fs = ForgetfulFs(mount, folder / "forgetfs.state", folder / "forgetfs.log")
    try:
        fs.start()
        yield fs
    finally:
        fs.stop()
        with suppress(OSError):
            mount.rmdir()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
