"""The model registry on disk (torch-free).

    <registry>/<name>/<version>/        a model directory (manifest.json, *.onnx, ...)
    <registry>/<name>/active.json       {"version": "3", "history": ["1", "3"]}  (atomic replace)
    <registry>/<name>/.staging/...      versions being written; never visible as versions
    <registry>/<name>/.lock             flock serialising publish/activate

A version only appears by an atomic rename of a complete directory, so a reader never sees a
half-written one; `publish` is idempotent per job id (recorded in the manifest's "job" entry).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from core.errors import ManifestError
from core.manifest import Manifest, load_manifest, write_manifest

ACTIVE = "active.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(LookupError):
    """Unknown model or version."""


def _vkey(v: str):
    return (0, int(v), v) if v.isdigit() else (1, 0, v)


def atomic_write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ reading
    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name)
                      and not p.name.startswith("."))

    def _name_dir(self, name: str) -> Path:
        if not NAME_RE.match(name or "") or not (self.root / name).is_dir():
            raise RegistryError(f"unknown model {name!r}")
        return self.root / name

    def versions(self, name: str) -> list[str]:
        d = self._name_dir(name)
        return sorted((p.name for p in d.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()), key=_vkey)

    def version_dir(self, name: str, version: str) -> Path:
        d = self._name_dir(name)
        if not NAME_RE.match(str(version)) or not (d / str(version) / "manifest.json").is_file():
            raise RegistryError(f"unknown version {version!r} of model {name!r}")
        return d / str(version)

    def manifest(self, name: str, version: str) -> Manifest:
        return load_manifest(self.version_dir(name, version))

    def _active_doc(self, name: str) -> dict:
        p = self._name_dir(name) / ACTIVE
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return {}

    def active(self, name: str) -> str | None:
        v = self._active_doc(name).get("version")
        if v is not None:
            return str(v)
        vs = self.versions(name)
        return vs[-1] if vs else None

    def history(self, name: str) -> list[str]:
        return [str(v) for v in self._active_doc(name).get("history", [])]

    # ------------------------------------------------------------ writing
    @contextmanager
    def lock(self, name: str, create: bool = False):
        if create:
            if not NAME_RE.match(name or ""):
                raise RegistryError(f"invalid model name {name!r}")
            (self.root / name).mkdir(parents=True, exist_ok=True)
        d = self._name_dir(name)
        with open(d / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def activate(self, name: str, version: str) -> None:
        with self.lock(name):
            self.version_dir(name, version)
            doc = self._active_doc(name)
            hist = [str(v) for v in doc.get("history", [])]
            if hist and hist[-1] == str(version):
                return
            hist.append(str(version))
            atomic_write_json(self.root / name / ACTIVE, {"version": str(version), "history": hist[-100:]})

    def rollback(self, name: str) -> str:
        """Activate the version that was active before the current one; returns it."""
        with self.lock(name):
            self._name_dir(name)
            hist = self.history(name)
            existing = set(self.versions(name))
            while len(hist) >= 2:
                hist.pop()
                if hist[-1] in existing:
                    atomic_write_json(self.root / name / ACTIVE, {"version": hist[-1], "history": hist})
                    return hist[-1]
            raise RegistryError(f"model {name!r} has no earlier active version to roll back to")

    def find_job_version(self, name: str, job_id: str) -> str | None:
        try:
            versions = self.versions(name)
        except RegistryError:
            return None
        for v in versions:
            try:
                if (load_manifest(self.root / name / v).data.get("job") or {}).get("id") == job_id:
                    return v
            except ManifestError:
                continue
        return None

    def staging_dir(self, name: str, key: str) -> Path:
        """A private place (same file system) to build a version before `publish` renames it in."""
        d = self.root / name / ".staging"
        d.mkdir(parents=True, exist_ok=True)
        return d / key

    def publish(self, name: str, built: Path, job_id: str | None = None, activate: bool = True,
                extra: dict | None = None) -> tuple[str, bool]:
        """Move a complete model directory in as the next version. Returns (version, created).

        Idempotent per job id: when a version from `job_id` exists, it is returned and `built` dropped.
        """
        with self.lock(name, create=True):
            if job_id:
                prev = self.find_job_version(name, job_id)
                if prev is not None:
                    shutil.rmtree(built, ignore_errors=True)
                    if activate:
                        self._activate_locked(name, prev)
                    return prev, False
            existing = [v for v in self.versions(name) if v.isdigit()] if (self.root / name).is_dir() else []
            version = str(max((int(v) for v in existing), default=0) + 1)
            m = load_manifest(built)
            data = dict(m.data)
            data["name"] = name
            data["version"] = version
            if job_id:
                data["job"] = {"id": job_id, **(extra or {})}
            write_manifest(built, data)
            os.rename(built, self.root / name / version)
            if activate:
                self._activate_locked(name, version)
            return version, True

    def _activate_locked(self, name: str, version: str) -> None:
        doc = self._active_doc(name)
        hist = [str(v) for v in doc.get("history", [])]
        if not hist or hist[-1] != version:
            hist.append(version)
        atomic_write_json(self.root / name / ACTIVE, {"version": version, "history": hist[-100:]})

    def seed(self, model_dir: str | Path) -> tuple[str, str] | None:
        """Copy a model directory in as name/version when the registry lacks it."""
        m = load_manifest(model_dir)
        name, version = m.name, m.version
        if not NAME_RE.match(name) or not NAME_RE.match(version):
            raise ManifestError(f"{model_dir}: name/version {name!r}/{version!r} not usable as directory names")
        target = self.root / name / version
        with self.lock(name, create=True):
            if not (target / "manifest.json").is_file():
                tmp = Path(tempfile.mkdtemp(prefix=f".seed-{version}-", dir=self.root / name))
                shutil.rmtree(tmp)
                shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(".*"))
                os.rename(tmp, target)
            if self._active_doc(name).get("version") is None:
                self._activate_locked(name, version)
        return name, version
