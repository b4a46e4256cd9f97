"""The model registry on disk (torch-free).

    <registry>/<name>/<version>/        a model directory (manifest.json, *.onnx, ...)
    <registry>/<name>/active.json       {"version": "3", "history": ["1", "3"]}  (atomic replace)
    <registry>/<name>/active.json.bak   the same pointer, written first: what a truncated active.json falls back to
    <registry>/<name>/.staging/...      versions being written; never visible as versions
    <registry>/<name>/.lock             flock serialising publish/activate

A version only appears by an atomic rename of a complete directory, so a reader never sees a
half-written one; `publish` is idempotent per job id (recorded in the manifest's "job" entry).

Nothing on disk is trusted: `check` refuses a version whose manifest.json is invalid, names another
model/version than its folder, or whose files do not match their sha256 (`Manifest.verify`); `activate`
checks before it moves the pointer. `pointer` reads active.json, or its backup when active.json is
unreadable (and says so), so a truncated pointer neither switches versions nor loses the history.
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
BACKUP = "active.json.bak"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(LookupError):
    """Unknown model or version (404)."""

    status = 404


class VersionUnusable(RegistryError):
    """A version exists but cannot be served: invalid manifest, wrong name/version, digest mismatch, ONNX that
    does not load (422; the message names the cause, never a server path)."""

    status = 422

    def __init__(self, name: str, version: str, reason: str):
        super().__init__(f"version {version!r} of model {name!r} cannot be served: {reason}")
        self.name, self.version, self.reason = name, str(version), reason


class ModelUnavailable(RegistryError):
    """The model exists but no version of it can be served here (503): never answered by another model."""

    status = 503


class VersionInUse(RegistryError):
    """The version is active (or served) and cannot be deleted (409)."""

    status = 409


def public_reason(e: BaseException, root: Path | None = None, label: str = "") -> str:
    """An error about a model directory without server paths (the folder becomes `label`, others their name)."""
    msg = str(e) or type(e).__name__
    if root is not None:
        for r in {str(root), str(Path(root).resolve())}:
            msg = msg.replace(r, label)
    return re.sub(r"(?<![\w.])(?:/[^\s/'\"():,]+)+/?", lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], msg)


def check_model_dir(vdir: Path, name: str, version: str, identity: bool = True, digests: bool = True) -> Manifest:
    """A model directory's manifest, or VersionUnusable naming why it cannot be served: manifest.json invalid,
    (identity) a name/version other than `name`/`version`, an ONNX graph the digests do not cover, a file
    missing or not matching its sha256 (`digests`: Manifest.verify)."""
    label = f"{name}/{version}"
    try:
        m = load_manifest(vdir)
    except (ManifestError, ValueError, TypeError, KeyError) as e:
        raise VersionUnusable(name, version, "invalid manifest.json: " + public_reason(e, vdir, label)) from None
    try:
        mname, mversion = str(m.data["name"]), str(m.data["version"])
        files = m.data.get("files") or {}
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
        onnx = {net: str(spec["file"]) for net, spec in dict(m.data["onnx"]).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise VersionUnusable(name, version, f"invalid manifest.json: {public_reason(e)}") from None
    for f in [*files, *onnx.values()]:
        if Path(f).is_absolute() or ".." in Path(f).parts:
            raise VersionUnusable(name, version, f"invalid manifest.json: file {f!r} is outside the model directory")
    if identity and (mname, mversion) != (name, version):
        raise VersionUnusable(name, version, f"its manifest.json names {mname}/{mversion}, not the folder's "
                                             f"{label}: publish it under its own name and version")
    for net, f in onnx.items():
        if f not in files:
            raise VersionUnusable(name, version, f"{f} ({net}) has no sha256 in manifest.json")
    if digests:
        try:
            m.verify()
        except (ManifestError, OSError) as e:
            raise VersionUnusable(name, version, public_reason(e, vdir, label)) from None
    return m


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

    @staticmethod
    def _read_pointer(p: Path) -> dict | None:
        """A pointer file's {"version", "history"}; None when missing; ValueError when unreadable."""
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{p.name} is unreadable ({type(e).__name__})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), (str, int)) \
                or not isinstance(doc.get("history", []), list):
            raise ValueError(f"{p.name} does not hold a version and a history")
        return {"version": str(doc["version"]), "history": [str(v) for v in doc.get("history", [])]}

    def pointer(self, name: str) -> dict:
        """{"version", "history", "problem"}: active.json; when it is unreadable, its backup (problem says so);
        when both are, version None and the problem (callers keep serving what they serve). No pointer file
        at all: version None, no problem (the newest version is active)."""
        d = self._name_dir(name)
        try:
            doc = self._read_pointer(d / ACTIVE)
            return {**doc, "problem": None} if doc else {"version": None, "history": [], "problem": None}
        except ValueError as e:
            first = str(e)
        try:
            bak = self._read_pointer(d / BACKUP)
        except ValueError:
            bak = None
        if bak:
            return {**bak, "problem": f"{first}: using its backup (active version {bak['version']})"}
        return {"version": None, "history": [], "problem": f"{first} and has no usable backup: activate a version"}

    def _active_doc(self, name: str) -> dict:
        return self.pointer(name)

    def active(self, name: str) -> str | None:
        """The active version: the pointer's, else (no pointer file) the newest; None when the pointer and its
        backup are unreadable."""
        ptr = self.pointer(name)
        if ptr["version"] is not None:
            return ptr["version"]
        if ptr["problem"]:
            return None
        vs = self.versions(name)
        return vs[-1] if vs else None

    def history(self, name: str) -> list[str]:
        return self.pointer(name)["history"]

    def check(self, name: str, version: str, digests: bool = True) -> Manifest:
        """The version's manifest, or VersionUnusable naming why it cannot be served (see `check_model_dir`;
        its manifest must also name this name and version). RegistryError (404) when it does not exist."""
        return check_model_dir(self.version_dir(name, version), name, str(version), identity=True, digests=digests)

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

    def _write_pointer(self, name: str, version: str, history: list[str]) -> None:
        """The backup first, then active.json, each replaced atomically: one of them is always whole."""
        doc = {"version": str(version), "history": [str(v) for v in history][-100:]}
        atomic_write_json(self.root / name / BACKUP, doc)
        atomic_write_json(self.root / name / ACTIVE, doc)

    def activate(self, name: str, version: str) -> None:
        """Move the pointer to `version` after `check` (VersionUnusable, pointer unchanged, when it fails)."""
        with self.lock(name):
            self.check(name, version)
            ptr = self.pointer(name)
            hist = list(ptr["history"])
            if hist and hist[-1] == str(version) and ptr["version"] == str(version) and not ptr["problem"]:
                return
            if not hist or hist[-1] != str(version):
                hist.append(str(version))
            self._write_pointer(name, str(version), hist)

    def _usable(self, name: str, version: str) -> bool:
        try:
            self.check(name, version)
            return True
        except RegistryError:
            return False

    def rollback(self, name: str) -> str:
        """Activate the version that was active before the current one (skipping any that cannot be served
        or no longer exist); returns it."""
        with self.lock(name):
            self._name_dir(name)
            hist = self.history(name)
            existing = set(self.versions(name))
            while len(hist) >= 2:
                hist.pop()
                if hist[-1] in existing and self._usable(name, hist[-1]):
                    self._write_pointer(name, hist[-1], hist)
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
        hist = list(self.pointer(name)["history"])
        if not hist or hist[-1] != version:
            hist.append(version)
        self._write_pointer(name, version, hist)

    def delete(self, name: str, version: str, keep: set[str] = frozenset()) -> None:
        """Remove a version that is not active (nor in `keep`: versions this process serves). It disappears by
        one rename, then its files are removed; the history keeps its entry (rollback skips it)."""
        with self.lock(name):
            vdir = self.version_dir(name, version)
            ptr = self.pointer(name)
            active = self.active(name)
            if str(version) == active or str(version) in keep:
                raise VersionInUse(f"version {version!r} of model {name!r} is active: activate another one first")
            if ptr["problem"] and ptr["version"] is None:
                raise VersionInUse(f"the active pointer of model {name!r} is unreadable: activate a version first")
            trash = Path(tempfile.mkdtemp(prefix=f".trash-{version}-", dir=self.root / name))
            os.rename(vdir, trash / "v")
        shutil.rmtree(trash, ignore_errors=True)

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
            ptr = self.pointer(name)
            if ptr["version"] is None and not ptr["problem"]:
                self._activate_locked(name, version)
        return name, version
