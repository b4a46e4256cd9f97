"""A model directory uploaded as a .tar(.gz/.bz2/.xz) or .zip, unpacked safely (torch-free).

What an archive declares is checked before anything is written: member names (no absolute path, no `..`,
nothing outside the target), member types (regular files and folders only: no symbolic or hard links, no
devices or pipes), the number of members and their total unpacked size. Each file is then written by a
copy that counts bytes, so an archive whose data outgrows what it declared is stopped too. One top folder
around the model directory (`tar czf m.tgz my-model/`) is taken off.
"""

from __future__ import annotations

import errno
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 1000
CHUNK = 1 << 20


class ArchiveError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _safe_parts(name: str) -> tuple[str, ...]:
    name = name.replace("\\", "/")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{name!r}: absolute paths are not accepted")
    parts = tuple(x for x in p.parts if x not in ("", "."))
    if any(x == ".." for x in parts):
        raise ArchiveError(f"{name!r}: '..' in a member name is not accepted")
    return parts


def _members(archive: Path):
    """[(parts, is_dir, declared size, opener)] of the archive, every member checked; ArchiveError otherwise."""
    with open(archive, "rb") as f:
        head = f.read(4)
    out = []
    if head[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as e:
            raise ArchiveError(f"not a valid zip file: {e}") from None
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode and (stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                raise ArchiveError(f"{info.filename!r}: links and special files are not accepted")
            parts = _safe_parts(info.filename)
            out.append((parts, info.is_dir(), info.file_size, lambda i=info: zf.open(i)))
        return out, zf
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"expected a .tar, .tar.gz or .zip of a model directory ({type(e).__name__})") from None
    try:
        for m in tf:
            if len(out) >= MAX_MEMBERS:
                raise ArchiveError(f"more than {MAX_MEMBERS} files in the archive", 413)
            if m.issym() or m.islnk():
                raise ArchiveError(f"{m.name!r}: links are not accepted")
            if not (m.isfile() or m.isdir()):
                raise ArchiveError(f"{m.name!r}: only files and folders are accepted")
            parts = _safe_parts(m.name)
            out.append((parts, m.isdir(), m.size, lambda m=m: tf.extractfile(m)))
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise ArchiveError(f"the archive is damaged ({type(e).__name__})") from None
    return out, tf


def extract_model(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack `archive` into the new folder `dest`; returns the model directory (dest, or its one top folder)."""
    members, handle = _members(archive)
    try:
        if len(members) > MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} files in the archive", 413)
        members = [m for m in members if m[0]]
        total = sum(size for _p, is_dir, size, _o in members if not is_dir)
        if total > max_bytes:
            raise ArchiveError(f"the archive unpacks to {total} bytes, over the cap of {max_bytes}", 413)
        files = [m for m in members if not m[1]]
        if not files:
            raise ArchiveError("the archive holds no files")
        tops = {p[0] for p, *_ in members}
        strip = 1 if len(tops) == 1 and all(len(p) > 1 for p, is_dir, *_ in files) else 0
        dest.mkdir(parents=True)
        root = dest.resolve()
        written = 0
        seen: set[tuple[str, ...]] = set()
        for parts, is_dir, size, opener in members:
            rel = parts[strip:]
            if not rel:
                continue
            target = root.joinpath(*rel)
            if root not in target.resolve().parents:
                raise ArchiveError(f"{'/'.join(parts)!r} lands outside the model directory")
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            if rel in seen:
                raise ArchiveError(f"{'/'.join(parts)!r} appears twice in the archive")
            seen.add(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "xb") as out:
                n = 0
                while chunk := src.read(CHUNK):
                    n += len(chunk)
                    written += len(chunk)
                    if n > size or written > max_bytes:
                        raise ArchiveError(f"{'/'.join(parts)!r} unpacks to more than it declares", 413)
                    out.write(chunk)
        return dest
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise ArchiveError(f"the archive is damaged ({type(e).__name__})") from None
    except OSError as e:
        if isinstance(e, FileExistsError):
            raise ArchiveError("a member appears twice in the archive") from None
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise  # the server's disk, not the archive (503 from the route)
        raise ArchiveError(f"cannot unpack the archive: {e.strerror or type(e).__name__}") from None
    finally:
        handle.close()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
