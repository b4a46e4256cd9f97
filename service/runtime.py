"""ONNX Runtime sessions per model version, their batchers, and the pool that hot-swaps versions.

Torch-free (this is the request path). A `ModelRuntime` owns the ONNX sessions of one version and
one `Batcher` per network: "g" (z -> x) and "h" (x -> z, logits), the latter one call of the fused
h.onnx. The `ModelPool` keeps the active runtime of every model name plus a few other loaded versions; `refresh()` (polled) loads a newly active version beside the old one, swaps the
reference, and closes the old runtime once its in-flight requests are done.
"""

from __future__ import annotations

import asyncio
import logging
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
from .registry import Registry, RegistryError
from .settings import Settings

log = logging.getLogger("nemgan.service")

# Fixed tuning (measured in ../shared/notes/serving.md; not settings: no deployment has needed to turn them).
BATCH_WORKERS = 2  # batches of one network that may run at once: one computes while the next forms
ORT_SPINNING = False  # spinning intra-op threads would take the CPU the event loop and the decoders need
MAX_LOADED_VERSIONS = 4  # loaded non-active versions kept per process (requests naming an old version)


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

            def on_batch(n, dt, labels=labels):
                M.BATCH_SIZE.labels(*labels).observe(n)
                M.INFERENCE_DURATION.labels(*labels).observe(dt)

            fn = self.run_scored if net == "h" else (lambda x, net=net: self.run(net, x))
            b = Batcher(fn, max_batch=s.max_batch_size, max_wait=s.max_wait_ms / 1000,
                        max_queue=s.max_queue, enabled=s.batching, on_batch=on_batch, workers=BATCH_WORKERS,
                        adaptive=s.adaptive_wait,
                        on_wait=M.QUEUE_WAIT.labels(*labels).observe, on_depth=M.QUEUE_DEPTH.labels(*labels).set)
            self.batchers[net] = b
        return b

    async def infer(self, net: str, x, n: int | None = None, prepare=None):
        """Batched `run(net, x)`: "g" -> images, "h" -> (z, logits, ood score, probabilities), "h1"/"h2" ->
        their output. With `prepare`, x is an input of n rows that prepare(x) turns into the array in the
        batch thread (image decoding), its errors raised here."""
        return await self.batcher(net).submit(x, n, prepare)

    def count_clustered(self, n: int) -> None:
        self._clustered.inc(n)

    def count_generated(self, n: int) -> None:
        self._generated.inc(n)

    def lease(self) -> "_Lease":
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


class ModelPool:
    def __init__(self, registry: Registry, settings: Settings):
        self.registry = registry
        self.settings = settings
        self.active: dict[str, ModelRuntime] = {}
        self.others: OrderedDict[tuple[str, str], ModelRuntime] = OrderedDict()
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task] = set()
        self.ready = False

    @property
    def default_name(self) -> str | None:
        if self.settings.default_model and self.settings.default_model in self.active:
            return self.settings.default_model
        if len(self.active) == 1:
            return next(iter(self.active))
        return next(iter(sorted(self.active)), None)

    def _load(self, name: str, version: str) -> ModelRuntime:
        t = time.perf_counter()
        rt = ModelRuntime(self.registry.version_dir(name, version), self.settings)
        if self.settings.warmup:
            rt.warmup()
        log.info("loaded %s/%s in %.2fs (%s)", name, version, time.perf_counter() - t, rt.providers[0])
        return rt

    async def start(self) -> None:
        await self.refresh()
        self.ready = True

    async def refresh(self) -> list[tuple[str, str]]:
        """Load newly active versions (beside the old ones) and swap them in. Returns what changed."""
        changed = []
        async with self._lock:
            for name in self.registry.names():
                try:
                    version = self.registry.active(name)
                except RegistryError:
                    continue
                if version is None:
                    continue
                cur = self.active.get(name)
                if cur is not None and cur.version == version:
                    continue
                rt = self.others.pop((name, version), None)
                if rt is None:
                    try:
                        rt = await asyncio.to_thread(self._load, name, version)
                    except Exception as e:  # a broken version never takes the service down
                        log.error("cannot load %s/%s: %s", name, version, e)
                        continue
                self.active[name] = rt
                M.set_active_model(name, version)
                changed.append((name, version))
                if cur is not None:
                    self._keep_other(cur)
        return changed

    def _keep_other(self, rt: ModelRuntime) -> None:
        self.others[(rt.name, rt.version)] = rt
        self.others.move_to_end((rt.name, rt.version))
        while len(self.others) > MAX_LOADED_VERSIONS:
            _, old = self.others.popitem(last=False)
            self._retire(old)

    def _retire(self, rt: ModelRuntime) -> None:
        task = asyncio.get_running_loop().create_task(rt.close(timeout=self.settings.graceful_timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def get(self, name: str | None, version: str | None) -> ModelRuntime:
        """The runtime for a request; raises RegistryError (-> 404) for unknown names/versions."""
        name = name or self.default_name
        if name is None:
            raise RegistryError("no model is loaded")
        rt = self.active.get(name)
        if rt is None:
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
