"""Atomic publishing: write beside the destination, rename into place at the end."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil

from ..errors import DestinationError


class AtomicTarget:
    """A temporary path beside ``dst`` that becomes ``dst`` only on :meth:`publish`.

    After :meth:`discard` (or any failure before publishing) nothing new exists at
    ``dst`` and no temporary file is left behind.
    """

    def __init__(self, dst: str, *, overwrite: bool, is_dir: bool = False):
        self.dst = os.path.abspath(dst)
        self.overwrite = overwrite
        self.is_dir = is_dir
        folder, name = os.path.split(self.dst)
        self.temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.partial")

    def prepare(self) -> str:
        """Check the destination can be written and return the temporary path to write."""
        folder = os.path.dirname(self.dst)
        if os.path.lexists(self.dst):
            if not self.overwrite:
                raise DestinationError(self.dst, "already exists (use --overwrite to replace it)")
            if os.path.isdir(self.dst) and not self.is_dir:
                raise DestinationError(
                    self.dst, "is a directory; refusing to replace it with a file"
                )
            if self.is_dir and not os.path.isdir(self.dst):
                raise DestinationError(
                    self.dst, "is a file; refusing to replace it with a directory"
                )
        if not os.path.isdir(folder):
            raise DestinationError(self.dst, f"folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DestinationError(self.dst, f"folder {folder} is not writable")
        return self.temp

    def publish(self) -> None:
        """Move the finished temporary output to the destination."""
        if not self.is_dir or not os.path.exists(self.dst):
            os.replace(self.temp, self.dst)
            return
        # A directory cannot be renamed over a non-empty one: swap, then drop the old one.
        old = self.temp + ".old"
        os.rename(self.dst, old)
        try:
            os.rename(self.temp, self.dst)
        except OSError:
            os.rename(old, self.dst)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary output and its side files, whatever state they are in."""
        for path in (self.temp, self.temp + "-journal", self.temp + "-wal", self.temp + "-shm"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
