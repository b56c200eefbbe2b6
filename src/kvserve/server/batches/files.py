"""The bytes of uploaded and written files, one file per id under `<data dir>/files/`.

Ids are checked against ID_PATTERN before they become paths, so that no id names a file
outside the directory; a file is written under a temporary name, synced and renamed, so
that a crash never leaves half a file under its id.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

ID_PATTERN = re.compile(r"file-[0-9a-f]{32}(-output|-errors)?")


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def valid_id(file_id: str) -> bool:
    return ID_PATTERN.fullmatch(file_id) is not None


class FileDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if not valid_id(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id

    def read(self, file_id: str) -> bytes | None:
        try:
            return self.path(file_id).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, file_id: str, source: BinaryIO) -> int:
        """Copy an upload in; its size in bytes."""
        return self._atomic(file_id, lambda out: shutil.copyfileobj(source, out, 1 << 20))

    def write(self, file_id: str, rows: list[str]) -> int:
        """Write JSONL rows; the file's size in bytes."""
        return self._atomic(file_id, lambda out: out.writelines(row.encode() + b"\n" for row in rows))

    def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    @staticmethod
    def result_id(batch_id: str, kind: str) -> str:
        """The id of a job's output or error file: fixed by the job, so a rewrite replaces it."""
        return f"file-{batch_id.removeprefix('batch_')}-{kind}"

    def _atomic(self, file_id: str, fill) -> int:
        final = self.path(file_id)
        temp = final.with_name(final.name + ".part")
        with open(temp, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(temp, final)
        return size
