"""Versions in a local folder (the embedded default): ``os.mkdir`` claims a number, a copy is
checked, and the manifest appears whole by a rename."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kfp_serve.components.errors import InfrastructureError, filesystem_error
from kfp_serve.components.storage.manifest import MANIFEST, VERSION_NAME, crc32c_of, manifest_text


class LocalStore:
    """The ``v<N>`` folders under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.where = str(root)
        with self._boundary():
            root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".v*-staging-*"):  # staging folders of killed runs (older releases)
            shutil.rmtree(leftover, ignore_errors=True)

    def folder(self, number: int) -> Path:
        return self.root / f"v{number}"

    def uri(self, number: int) -> str:
        return str(self.folder(number))

    def versions(self) -> dict[int, bool]:
        """version -> committed, for every ``v<N>`` folder."""
        found = {}
        for child in self.root.iterdir():
            match = VERSION_NAME.match(child.name)
            if match and child.is_dir():
                found[int(match.group(1))] = (child / MANIFEST).is_file()
        return found

    def claim(self, number: int) -> bool:
        """Create ``v<N>`` (``os.mkdir`` fails if it exists): True when this call made it."""
        try:
            with self._boundary(claiming=True):
                self.folder(number).mkdir()
            return True
        except FileExistsError:
            return False

    def committed(self, number: int) -> bool:
        return (self.folder(number) / MANIFEST).is_file()

    def upload(self, number: int, source: Path, manifest: dict) -> None:
        """Copy the manifest's files, stopping at the first error (``copytree`` would go on
        through every file of a full disk); a failed copy leaves ``v<N>`` empty, still
        claimed and uncommitted, rather than holding truncated files."""
        folder = self.folder(number)
        try:
            with self._boundary():
                for name in sorted(manifest["files"]):
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source / name, folder / name)
        except BaseException:
            for child in folder.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            raise

    def verify(self, number: int, manifest: dict) -> None:
        folder = self.folder(number)
        for name, info in manifest["files"].items():
            copy = folder / name
            if copy.stat().st_size != info["size"] or crc32c_of(copy) != info["crc32c"]:
                raise InfrastructureError(f"{name} changed while it was copied; rerun the publish")

    def commit(self, number: int, manifest: dict) -> None:
        """The manifest appears whole (write, then rename): the version is committed then."""
        folder = self.folder(number)
        folder.chmod(0o755)
        staged = folder / f".{MANIFEST}.{os.getpid()}"
        try:
            with self._boundary():
                staged.write_text(manifest_text(manifest))
                os.rename(staged, folder / MANIFEST)
        finally:
            staged.unlink(missing_ok=True)

    @contextmanager
    def _boundary(self, claiming: bool = False) -> Iterator[None]:
        """A read-only, full or misplaced destination, in one line (``claiming``: not
        ``FileExistsError``, which ``claim`` reads as another publish's claim)."""
        try:
            yield
        except OSError as err:
            if claiming and isinstance(err, FileExistsError):
                raise
            raise filesystem_error(err, self.root, "publishing") from err
