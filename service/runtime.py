"""ONNX Runtime sessions per model version, their batchers, and the pool that hot-swaps versions.

Torch-free (this is the request path). A `ModelRuntime` owns the ONNX sessions of one version and
one `Batcher` per network: "g" (z -> x) and "h" (x -> z, logits), the latter one call of the fused
h.onnx. The `ModelPool` keeps the active runtime of every model name plus a few other loaded versions; `refresh()` (polled) loads a newly active version beside the old one, swaps the
reference, and closes the old runtime once its in-flight requests are done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from core.errors import ManifestError
from core.manifest import ONNX_FUSED_IO, ONNX_IO, Manifest, load_manifest
from core.modes import softmax
from core.ood import OodCalibration

from . import metrics as M
from .batcher import Batcher
from .registry import (
    ModelUnavailable,
    Registry,
    RegistryError,
    VersionUnusable,
    public_reason,
)
from .settings import Settings
from .stats import NetworkStats

log = logging.getLogger("nemgan.service")

# Fixed tuning (measured in ../shared/notes/serving.md; not settings: no deployment has needed to turn them).
BATCH_WORKERS = 2  # batches of one network that may run at once: one computes while the next forms
ORT_SPINNING = False  # spinning intra-op threads would take the CPU the event loop and the decoders need
MAX_LOADED_VERSIONS = 4  # loaded non-active versions kept per process (requests naming an old version)


_BLAS_SINGLE_THREADED = False


def single_threaded_blas() -> None:
    """Run numpy's BLAS on one thread in this process (once; idempotent).

    ONNX Runtime owns the cores; the batch thread's own matmuls (the OOD score: pixel_pca's [N,D]x[D,P]) are
    small. With OpenBLAS's default threads they fought ORT's and the event loop's: pixel_pca took ~300 us an
    image at batch 64 instead of ~10, and PNG /v1/cluster lost half its throughput (benchmarks/ood_cost.py)."""
    global _BLAS_SINGLE_THREADED
    if _BLAS_SINGLE_THREADED:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it numpy keeps its default BLAS threads
        log.warning("threadpoolctl is not installed: numpy's BLAS keeps its default threads (slower OOD score)")
    else:
        threadpool_limits(1, user_api="blas")
    _BLAS_SINGLE_THREADED = True


def pick_providers(setting: str) -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if setting == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in avail and setting in ("auto", "cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if setting == "cuda":
        log.warning("CUDA execution provider requested but not available; using CPU")
    return ["CPUExecutionProvider"]


class ModelRuntime:
    def __init__(self, model_dir: Path, settings: Settings):
        import onnxruntime as ort

        single_threaded_blas()
        self.dir = Path(model_dir)
        self.manifest: Manifest = load_manifest(self.dir)
        self.name, self.version = self.manifest.name, self.manifest.version
        self.spec = self.manifest.latent_spec()  # validated: priors renormalised in float64
        self.image = self.manifest.image
        self.mode_labels = self.manifest.mode_labels
        # The OOD score's statistics (core/ood.py); None for model directories exported before calibration.
        self.ood = OodCalibration.load(self.manifest.data["ood"], self.dir) if "ood" in self.manifest.data else None
        self.providers = pick_providers(settings.providers)
        so = ort.SessionOptions()
        if settings.intra_op_threads:
            so.intra_op_num_threads = settings.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_SPINNING else "0")
        self._so = so
        if not self.manifest.has_onnx("h"):  # every export since the fused graph writes it
            raise ManifestError(f"{self.dir}: no fused h.onnx in the manifest (exported by an older nemgan); "
                                "re-export it with `nemgan export`")
        self.sessions = {}
        for net in ("g", "h"):
            self.session(net)
        self.settings = settings
        self.batchers: dict[str, Batcher] = {}
        self.stats: dict[str, NetworkStats] = {}  # per network, from the first request on
        self.headers = {"X-Nemgan-Model": self.name, "X-Nemgan-Version": self.version}
        self._clustered = M.IMAGES_CLUSTERED.labels(self.name)
        self._generated = M.IMAGES_GENERATED.labels(self.name)
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.retired = False

    def session(self, net: str):
        """The ONNX session of `net` (g, h1, h2, or the fused h), opened on first use."""
        s = self.sessions.get(net)
        if s is None:
            import onnxruntime as ort

            s = self.sessions[net] = ort.InferenceSession(str(self.manifest.onnx_path(net)), self._so,
                                                          providers=self.providers)
        return s

    def run(self, net: str, x: np.ndarray):
        """Synchronous ONNX call (used by the batcher thread, warm-up and the benchmark).

        "h" returns the tuple (z, logits); the other networks their one output."""
        if net == "h":
            return self.run_h(x)
        return self.session(net).run(None, {ONNX_IO[net]["inputs"][0]: x})[0]

    def run_h(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x -> (z, logits): one call of the fused graph h.onnx."""
        io = ONNX_FUSED_IO["h"]
        z, logits = self.sessions["h"].run(io["outputs"], {io["inputs"][0]: x})
        return z, logits

    def warmup(self) -> None:
        c, h, w = self.image.channels, self.image.height, self.image.width
        for n in (1, min(64, self.settings.max_batch_size)):
            self.run("g", np.zeros((n, self.spec.dim), np.float32))
            self.run_scored(np.zeros((n, c, h, w), np.float32))

    def run_scored(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """x -> (z, logits, OOD score, probabilities): what the "h" batcher runs, so the score and the softmax
        are computed in its thread, vectorised over the whole batch. The score is NaN when the model has no
        OOD calibration."""
        z, logits = self.run_h(x)
        probs = softmax(logits)  # here, vectorised over the batch, rather than per request on the event loop
        if self.ood is None:
            return z, logits, np.full(len(x), np.nan, np.float32), probs
        recon = self.run("g", z) if self.ood.needs_reconstruction else None
        return z, logits, self.ood.score(z, logits, x, recon), probs

    def batcher(self, net: str) -> Batcher:
        b = self.batchers.get(net)
        if b is None:
            s = self.settings
            labels = (self.name, net)
            st = self.stats.setdefault(net, NetworkStats())  # the OIP statistics (service/stats.py)
            observe_wait = M.QUEUE_WAIT.labels(*labels).observe

            def on_batch(n, dt, labels=labels):
                M.BATCH_SIZE.labels(*labels).observe(n)
                M.INFERENCE_DURATION.labels(*labels).observe(dt)
                st.on_batch(n, dt)

            def on_wait(dt):
                observe_wait(dt)
                st.on_wait(dt)

            fn = self.run_scored if net == "h" else (lambda x, net=net: self.run(net, x))
            b = Batcher(fn, max_batch=s.max_batch_size, max_wait=s.max_wait_ms / 1000,
                        max_queue=s.max_queue, enabled=s.batching, on_batch=on_batch, workers=BATCH_WORKERS,
                        adaptive=s.adaptive_wait,
                        on_wait=on_wait, on_depth=M.QUEUE_DEPTH.labels(*labels).set)
            self.batchers[net] = b
        return b

    async def infer(self, net: str, x, n: int | None = None, prepare=None):
        """Batched `run(net, x)`: "g" -> images, "h" -> (z, logits, ood score, probabilities), "h1"/"h2" ->
        their output. With `prepare`, x is an input of n rows that prepare(x) turns into the array in the
        batch thread (image decoding), its errors raised here."""
        b = self.batcher(net)
        t0 = time.perf_counter_ns()
        try:
            out = await b.submit(x, n, prepare)
        except BaseException:
            self.stats[net].on_done(False, time.perf_counter_ns() - t0)
            raise
        self.stats[net].on_done(True, time.perf_counter_ns() - t0)
        return out

    def count_clustered(self, n: int) -> None:
        self._clustered.inc(n)

    def count_generated(self, n: int) -> None:
        self._generated.inc(n)

    def lease(self) -> _Lease:
        """`async with rt.lease():` marks a request in flight on this runtime (close() waits for them)."""
        return _Lease(self)

    async def close(self, timeout: float | None = None) -> None:
        self.retired = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("closing %s/%s with %d requests in flight", self.name, self.version, self.inflight)
        for b in self.batchers.values():
            await b.close(timeout)
        self.batchers.clear()
        self.sessions.clear()


class _Lease:
    __slots__ = ("rt",)

    def __init__(self, rt: ModelRuntime):
        self.rt = rt

    async def __aenter__(self) -> ModelRuntime:
        rt = self.rt
        rt.inflight += 1
        rt._idle.clear()
        return rt

    async def __aexit__(self, *exc) -> None:
        rt = self.rt
        rt.inflight -= 1
        if rt.inflight == 0:
            rt._idle.set()


def _stamp(d: Path) -> tuple:
    """What a version folder holds (names, sizes, mtimes): a failed version is retried only once it changes."""
    try:
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(d)))
    except OSError:
        return ()


class ModelPool:
    """The runtimes this process serves. A version is loaded only after `Registry.check` (manifest, name/version,
    sha256 of every file) and ONNX Runtime opened it; a version that fails is remembered with its reason and
    not retried until its folder changes (no reload loop). When a model's active version cannot be served,
    the pool keeps serving what it served, or at start the last good version of the pointer's history, and
    says so: `problems[name]` (GET /v1/models), the log (once per failure), nemgan_model_problem{name,kind}.
    A model with nothing to serve makes readiness fail; a request for it (named or the default) gets 503."""

    def __init__(self, registry: Registry, settings: Settings):
        self.registry = registry
        self.settings = settings
        self.active: dict[str, ModelRuntime] = {}
        self.others: OrderedDict[tuple[str, str], ModelRuntime] = OrderedDict()
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task] = set()
        self.ready = False
        self.known: set[str] = set()  # model names with at least one version (what `default_name` may pick)
        self.failed: dict[tuple[str, str], tuple[tuple, str]] = {}  # (name, version) -> (folder stamp, reason)
        self.problems: dict[str, dict] = {}  # name -> {"kind", "wanted", "serving", "reason"}

    @property
    def default_name(self) -> str | None:
        # Chosen among every model of the registry, served or not: a default that cannot be served is answered
        # 503 by get(), never by another model.
        names = self.known | set(self.active)
        want = self.settings.default_model
        if want and want in names:
            return want
        return next(iter(sorted(names)), None)

    def unavailable(self) -> dict[str, str]:
        """Models with a version but nothing served: name -> why (readiness fails while there is one)."""
        return {n: p["reason"] for n, p in self.problems.items() if n not in self.active}

    def _load(self, name: str, version: str) -> ModelRuntime:
        """Check and load a version (VersionUnusable with a path-free reason when it cannot be served)."""
        version = str(version)
        vdir = self.registry.version_dir(name, version)
        stamp = _stamp(vdir)
        known = self.failed.get((name, version))
        if known is not None and known[0] == stamp:
            raise VersionUnusable(name, version, known[1])
        t = time.perf_counter()
        try:
            self.registry.check(name, version)
            rt = ModelRuntime(vdir, self.settings)
            if self.settings.warmup:
                rt.warmup()
        except VersionUnusable as e:
            self._failed(name, version, stamp, e.reason)
            raise
        except Exception as e:  # ONNX Runtime refusing a graph (INVALID_PROTOBUF...), a bad latent.npz, ...
            reason = public_reason(e, vdir, f"{name}/{version}")
            self._failed(name, version, stamp, reason)
            raise VersionUnusable(name, version, reason) from None
        self.failed.pop((name, version), None)
        log.info("loaded %s/%s in %.2fs (%s)", name, version, time.perf_counter() - t, rt.providers[0])
        return rt

    def _failed(self, name: str, version: str, stamp: tuple, reason: str) -> None:
        self.failed[(name, version)] = (stamp, reason)
        M.MODEL_LOAD_FAILURES.labels(name).inc()
        log.error("model %s version %s cannot be served: %s", name, version, reason)

    def _problem(self, name: str, kind: str | None, **info) -> None:
        old = self.problems.get(name)
        if kind is None:
            if old is not None:
                log.warning("model %s: problem cleared (%s)", name, old["reason"])
                self.problems.pop(name)
        else:
            new = {"kind": kind, **info}
            if new != old:
                (log.warning if kind == "pointer" else log.error)("model %s: %s", name, info.get("reason"))
            self.problems[name] = new
        for k in M.PROBLEM_KINDS:
            M.MODEL_PROBLEM.labels(name, k).set(1 if kind == k else 0)

    async def preload(self, name: str, version: str) -> ModelRuntime:
        """Load (checked) a version beside the active one before it is activated: VersionUnusable (422) when
        it cannot be served, and nothing changes."""
        version = str(version)
        cur = self.active.get(name)
        if cur is not None and cur.version == version:
            return cur
        async with self._lock:
            rt = self.others.get((name, version))
            if rt is None:
                rt = await asyncio.to_thread(self._load, name, version)
                self._keep_other(rt)
            return rt

    async def start(self) -> None:
        await self.refresh()
        self.ready = True

    async def _obtain(self, name: str, version: str) -> ModelRuntime:
        rt = self.others.pop((name, version), None)
        if rt is None:
            rt = await asyncio.to_thread(self._load, name, version)
        return rt

    async def refresh(self) -> list[tuple[str, str]]:
        """Load newly active versions (beside the old ones) and swap them in. Returns what changed.

        A pointer that cannot be read, or an active version that cannot be served, never changes what is
        served; with nothing served yet (start-up), the newest good version of the history is served instead."""
        changed = []
        async with self._lock:
            known = set()
            for name in self.registry.names():
                try:
                    versions = self.registry.versions(name)
                    ptr = self.registry.pointer(name)
                except RegistryError:
                    continue
                if not versions:
                    continue
                known.add(name)
                cur = self.active.get(name)
                version = ptr["version"] or (None if ptr["problem"] else versions[-1])
                if version is None:  # active.json and its backup unreadable: keep what is served
                    self._problem(name, "pointer" if cur else "unavailable", wanted=None,
                                  serving=cur.version if cur else None,
                                  reason=f"active.json: {ptr['problem']}" + ("" if cur else "; nothing is served"))
                    continue
                if cur is not None and cur.version == version:
                    self._problem(name, "pointer" if ptr["problem"] else None, wanted=version, serving=version,
                                  reason=f"active.json: {ptr['problem']}")
                    continue
                try:
                    rt = await self._obtain(name, version)
                except VersionUnusable as e:
                    rt = cur
                    if rt is None:  # start-up (or never served): the last good version of the history
                        for v in reversed(ptr["history"]):
                            if v == version or v not in versions:
                                continue
                            try:
                                rt = await self._obtain(name, v)
                                break
                            except (VersionUnusable, RegistryError):
                                continue
                    if rt is None:
                        self._problem(name, "unavailable", wanted=version, serving=None,
                                      reason=f"{e}; no earlier version of its history can be served either")
                        continue
                    self._problem(name, "fallback", wanted=version, serving=rt.version,
                                  reason=f"{e}; serving version {rt.version!r} instead")
                    if rt is cur:
                        continue
                except RegistryError:  # deleted meanwhile
                    continue
                else:
                    self._problem(name, "pointer" if ptr["problem"] else None, wanted=version, serving=version,
                                  reason=f"active.json: {ptr['problem']}")
                self.active[name] = rt
                M.set_active_model(name, rt.version)
                changed.append((name, rt.version))
                if cur is not None:
                    self._keep_other(cur)
            self.known = known
            for name in [n for n in self.problems if n not in known]:
                self._problem(name, None)
        return changed

    def _keep_other(self, rt: ModelRuntime) -> None:
        self.others[(rt.name, rt.version)] = rt
        self.others.move_to_end((rt.name, rt.version))
        while len(self.others) > MAX_LOADED_VERSIONS:
            _, old = self.others.popitem(last=False)
            self._retire(old)

    def drop(self, name: str, version: str) -> None:
        """Forget a deleted version (closed once its requests are done)."""
        rt = self.others.pop((name, str(version)), None)
        if rt is not None:
            self._retire(rt)
        self.failed.pop((name, str(version)), None)

    def _retire(self, rt: ModelRuntime) -> None:
        task = asyncio.get_running_loop().create_task(rt.close(timeout=self.settings.graceful_timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def get(self, name: str | None, version: str | None) -> ModelRuntime:
        """The runtime for a request; raises RegistryError (-> 404) for unknown names/versions, ModelUnavailable
        (503) for a model with nothing to serve, VersionUnusable (422) for a named version that cannot be served."""
        name = name or self.default_name
        if name is None:
            raise RegistryError("no model is loaded")
        rt = self.active.get(name)
        if rt is None:
            if name in self.known:
                why = (self.problems.get(name) or {}).get("reason", "it has not been loaded")
                raise ModelUnavailable(f"model {name!r} cannot be served: {why}")
            raise RegistryError(f"unknown model {name!r}")
        if version is None or str(version) == rt.version:
            return rt
        version = str(version)
        other = self.others.get((name, version))
        if other is not None:
            self.others.move_to_end((name, version))
            return other
        self.registry.version_dir(name, version)  # raises for unknown versions
        async with self._lock:
            other = self.others.get((name, version))
            if other is None:
                other = await asyncio.to_thread(self._load, name, version)
                self._keep_other(other)
        return other

    async def close(self, timeout: float = 5.0) -> None:
        self.ready = False
        for rt in [*self.active.values(), *self.others.values()]:
            await rt.close(timeout)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.active.clear()
        self.others.clear()
