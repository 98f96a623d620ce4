"""The model repository: which versions serve, loading and hot reload, atomic swaps, readiness.

Folders ``<root>/<name>/<version>/`` are scanned at start and every ``poll_interval_s``. A new version is
loaded and warmed in a worker thread, then swapped in; only then does the version it replaces stop taking
requests (its queue drains first). A version that fails to load is marked FAILED with a reason, and whatever
served before keeps serving. All state changes happen on the event loop, so readers need no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from service.batching import Batcher, BatchPolicy, BatchStats, PadRule
from service.errors import LoadFailed, NotFound, Unavailable, quote
from service.model_folder import LoadedFolder, ModelFolderError, fingerprint, load_folder, valid_name
from service.runtime import RuntimeOptions, release_memory

log = logging.getLogger(__name__)


class State(StrEnum):
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RepositoryConfig:
    root: Path
    models: tuple[str, ...] | None = None
    version_policy: str = "latest"
    latest_versions: int = 1
    specific_versions: tuple[int, ...] = ()
    poll_interval_s: float = 2.0
    variant: str = "fp32"


@dataclass
class VersionStatus:
    version: int
    state: State
    error: str = ""
    fingerprint: tuple[tuple[str, int, int], ...] = ()


@dataclass(eq=False)
class ServedVersion:
    """A loaded, warmed version with its batcher; what the data plane runs requests on."""

    folder: LoadedFolder
    batcher: Batcher
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.folder.spec.name

    @property
    def version(self) -> int:
        return self.folder.spec.version


Observer = Callable[[str, int, BatchStats], None]


class ModelRepository:
    def __init__(
        self,
        config: RepositoryConfig,
        runtime: RuntimeOptions,
        policy: BatchPolicy,
        observe: Observer,
        explain_batch_bytes: int = 256 << 20,
    ) -> None:
        self.config, self.runtime, self.policy, self._observe = config, runtime, policy, observe
        self.explain_batch_bytes = explain_batch_bytes
        self._serving: dict[str, dict[int, ServedVersion]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._expected: set[str] = set(config.models or ())
        self._unloaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self.started = False
        self.stopping = False
        self.scan_count = 0

    # ----- reading -----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(set(self._serving) | set(self._status))

    def get(self, name: str, version: int | None = None) -> ServedVersion:
        """The version asked for, or the newest serving one.

        Unavailable (503, retry) only while a version is loading or unloading, which waiting cures; NotFound (404)
        for a model or version that does not serve and will not without a change to the repository.
        """
        versions = self._serving.get(name)
        if not versions:
            if name not in self._status:
                raise NotFound(f"unknown model {quote(name)}")
            if any(s.state in (State.LOADING, State.UNLOADING) for s in self._status[name].values()):
                raise Unavailable(f"model {quote(name)} has no version ready to serve yet")
            states = ", ".join(f"version {s.version} {s.state.lower()}" for s in self.statuses(name))
            raise NotFound(f"model {quote(name)} has no serving version ({states})")
        if version is None:
            return versions[max(versions)]
        served = versions.get(version)
        if served is None:
            status = self._status.get(name, {}).get(version)
            if status is not None and status.state in (State.LOADING, State.UNLOADING):
                raise Unavailable(f"model {quote(name)} version {version} is {status.state.lower()}")
            raise NotFound(f"model {quote(name)} has no serving version {version}")
        return served

    def statuses(self, name: str) -> list[VersionStatus]:
        if name not in self._status:
            raise NotFound(f"unknown model {quote(name)}")
        return [self._status[name][v] for v in sorted(self._status[name], reverse=True)]

    def serving(self, name: str) -> list[ServedVersion]:
        return [self._serving.get(name, {})[v] for v in sorted(self._serving.get(name, {}), reverse=True)]

    def model_ready(self, name: str, version: int | None = None) -> bool:
        versions = self._serving.get(name, {})
        return bool(versions) if version is None else version in versions

    @property
    def ready(self) -> bool:
        """Started, not stopping, and every expected model has a version serving."""
        if not self.started or self.stopping:
            return False
        return all(self._serving.get(name) for name in self._expected - self._unloaded)

    # ----- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.poll()
        self.started = True
        if self.config.poll_interval_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stop polling and drain every batcher (queued requests still get answers)."""
        self.stopping = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        async with self._lock:
            for name in list(self._serving):
                for version in list(self._serving[name]):
                    await self._unload(name, version)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.poll()
            except Exception:  # a bad scan must not stop hot reload for good
                log.exception("repository scan failed")

    async def poll(self) -> None:
        """Scan the root once and bring every model in line with the version policy."""
        async with self._lock:
            on_disk = self._scan()
            if self.config.models is None:
                self._expected |= set(on_disk)
            for name in sorted(set(on_disk) | set(self._serving) | set(self._status)):
                if name in self._unloaded:
                    continue
                await self._reconcile(name, on_disk.get(name, {}))
            self.scan_count += 1

    async def load_model(self, name: str) -> None:
        """Serve a model of the repository root (admin); raises NotFound if it has no version folder."""
        async with self._lock:
            versions = self._scan().get(name)
            if not versions:
                raise NotFound(f"no model {quote(name)} in the repository")
            self._unloaded.discard(name)
            self._expected.add(name)
            await self._reconcile(name, versions)
            if not self._serving.get(name):
                reasons = "; ".join(f"version {s.version}: {s.error}" for s in self.statuses(name) if s.error)
                raise LoadFailed(f"model {quote(name)} failed to load ({reasons or 'no version'})")

    async def unload_model(self, name: str) -> None:
        """Stop serving a model until it is loaded again (admin)."""
        async with self._lock:
            if name not in self._serving and name not in self._status:
                raise NotFound(f"unknown model {quote(name)}")
            self._unloaded.add(name)
            for version in list(self._serving.get(name, {})):
                await self._unload(name, version)

    # ----- scanning and reconciling ------------------------------------------------------------------------
    def _scan(self) -> dict[str, dict[int, Path]]:
        found: dict[str, dict[int, Path]] = {}
        try:
            model_dirs = [p for p in self.config.root.iterdir() if p.is_dir() and valid_name(p.name)]
        except OSError:
            log.warning("model repository %s is unreadable", self.config.root)
            return found
        for model_dir in model_dirs:
            if self.config.models is not None and model_dir.name not in self.config.models:
                continue
            with contextlib.suppress(OSError):
                versions = {
                    int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
                }
                if versions:
                    found[model_dir.name] = versions
        return found

    async def _reconcile(self, name: str, on_disk: dict[int, Path]) -> None:
        self._status.setdefault(name, {})
        wanted = await self._choose(name, on_disk)
        for version in list(self._serving.get(name, {})):
            if version not in wanted:
                await self._unload(name, version)
        statuses = self._status[name]
        for version in [v for v in statuses if v not in on_disk and v not in self._serving.get(name, {})]:
            del statuses[version]  # the folder is gone: forget the version
        if not statuses and name not in self._serving:
            del self._status[name]

    async def _choose(self, name: str, on_disk: dict[int, Path]) -> set[int]:
        """Load what the policy wants (newest first) and return the versions that should serve."""
        policy = self.config.version_policy
        if policy == "specific":
            candidates = sorted((v for v in on_disk if v in self.config.specific_versions), reverse=True)
        else:
            candidates = sorted(on_disk, reverse=True)
        limit = self.config.latest_versions if policy == "latest" else len(candidates)
        wanted: set[int] = set()
        for version in candidates:
            if len(wanted) >= limit:
                break
            if await self._ensure_loaded(name, version, on_disk[version]):
                wanted.add(version)
        return wanted

    async def _ensure_loaded(self, name: str, version: int, folder: Path) -> bool:
        status = self._status[name].get(version)
        print_ = fingerprint(folder)
        if version in self._serving.get(name, {}):
            return True
        if status is not None and status.state == State.FAILED and status.fingerprint == print_:
            return False  # unchanged since it failed: do not retry every scan
        self._status[name][version] = VersionStatus(version, State.LOADING, fingerprint=print_)
        log.info("loading model %s version %s", name, version)
        try:
            loaded = await asyncio.to_thread(
                load_folder, folder, name, version, self.runtime, self.config.variant, self.policy.max_batch_size
            )
        except ModelFolderError as exc:
            self._status[name][version] = VersionStatus(version, State.FAILED, str(exc), print_)
            log.error("model %s version %s failed to load: %s", name, version, exc)
            return False
        self._serve(loaded, print_)
        return True

    def _serve(self, loaded: LoadedFolder, print_: tuple[tuple[str, int, int], ...]) -> None:
        spec, signature = loaded.spec, loaded.spec.signature
        core = [role for role in ("probabilities", "attention") if signature.has(role)]
        explain = ["self_attention"] if signature.has("self_attention") else []
        policy = self._policy_for(loaded)
        padding = PadRule(signature.pad_id, signature.paddable, signature.fixed_length, signature.segments is not None)
        batcher = Batcher(
            loaded.model.predict, policy, padding, core, explain,
            lambda stats: self._observe(spec.name, spec.version, stats), loaded.model.per_token_s,
        )  # fmt: skip
        versions = dict(self._serving.get(spec.name, {}))
        versions[spec.version] = ServedVersion(loaded, batcher)
        self._serving[spec.name] = versions  # swapped in one assignment: readers see old or new, never half
        self._status[spec.name][spec.version] = VersionStatus(spec.version, State.AVAILABLE, fingerprint=print_)
        log.info(
            "model %s version %s serving (variant %s, providers %s)",
            spec.name, spec.version, spec.variant, ",".join(loaded.model.providers),
        )  # fmt: skip

    def _policy_for(self, loaded: LoadedFolder) -> BatchPolicy:
        """The batching policy of one version: the settings', with the bounds they leave to the model filled in. A
        GPU runs one large call faster than several smaller ones with less padding: no splitting there."""
        policy = self.policy
        tokens = policy.max_batch_tokens or loaded.default_batch_tokens(policy.max_batch_size)
        cells = policy.max_explain_cells or loaded.default_explain_cells(self.explain_batch_bytes)
        split = policy.split_min if loaded.model.device == "cpu" else 0
        return dataclasses.replace(policy, max_batch_tokens=tokens, max_explain_cells=cells, split_min=split)

    async def _unload(self, name: str, version: int) -> None:
        versions = dict(self._serving.get(name, {}))
        served = versions.pop(version, None)
        if served is None:
            return
        self._serving[name] = versions
        status = self._status.setdefault(name, {}).setdefault(version, VersionStatus(version, State.UNLOADING))
        status.state = State.UNLOADING
        await served.batcher.close()  # queued and running requests finish first
        del served
        status.state = State.END
        if not versions:
            del self._serving[name]
        release_memory()
        log.info("model %s version %s unloaded", name, version)
