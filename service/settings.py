"""Every setting of the service, read once from the environment (prefix ``ATTENTION_SERVE_``) or passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.cores import usable_cores

ENV_PREFIX = "ATTENTION_SERVE_"
MAX_WORKERS = 64
VersionPolicy = Literal["latest", "all", "specific"]
Variant = Literal["fp32", "optimized", "int8", "fp16"]


class Settings(BaseSettings):
    """Configuration of one server process. Each field is also ``ATTENTION_SERVE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # Where and what to serve
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="TCP port of the gRPC API (Open Inference Protocol); 0 turns gRPC off."
    )
    grpc_server: Literal["auto", "native", "process", "thread", "loop"] = Field(
        "auto",
        description=(
            "Where gRPC runs: 'native', gRPC's C++ server in a front process (built by native/build.sh) relaying "
            "each call to a worker, one front for all workers, each call to the least busy (the most calls per "
            "second, the least CPU per call; one client connection is served by every worker); 'process', a front "
            "process per worker in Python; 'auto', native when it is built, else process; 'thread', an event loop "
            "of its own in the worker; 'loop', the HTTP server's loop (no extra thread or process)."
        ),
    )
    workers: int = Field(
        0,
        ge=0,
        le=MAX_WORKERS,
        description=(
            "Server processes, each with its own models and batcher (0: one per usable core on CPU; "
            "one when a GPU provider would be used or the admin endpoints are on)."
        ),
    )
    model_repository: Path = Field(Path("models"), description="Root folder holding <name>/<version>/ model folders.")
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="Models to serve (default: every model in the repository)."
    )
    version_policy: VersionPolicy = Field("latest", description="Serve the latest version(s), all, or specific ones.")
    latest_versions: int = Field(1, ge=1, description="How many of the newest versions the 'latest' policy serves.")
    specific_versions: Annotated[list[int], NoDecode] = Field(
        [], description="Versions served under the 'specific' policy."
    )
    poll_interval_s: float = Field(2.0, ge=0, description="Seconds between repository scans; 0 turns hot reload off.")
    version_labels: dict[str, dict[str, int]] = Field(
        {}, description='Version labels per model for /labels/ routes, e.g. {"sentiment": {"stable": 1}}.'
    )
    variant: Variant = Field("fp32", description="Graph variant to load where a version has it (else fp32).")

    # ONNX Runtime
    providers: Annotated[list[str] | None, NoDecode] = Field(
        None, description="Execution providers in order (default: best available)."
    )
    require_provider: bool = Field(
        False, description="Refuse to load a version (so: not ready) unless the first requested provider is used."
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description=(
            "ONNX Runtime intra-op threads of each model (0: every usable core for a model of 5M parameters or more, "
            "so that a lone request uses them all; the usable cores divided by the workers for a smaller one)."
        ),
    )
    inter_op_threads: int = Field(1, ge=1, description="ONNX Runtime inter-op threads.")
    allow_spinning: bool = Field(
        False, description="Let ONNX Runtime's idle threads spin (fastest alone, but steals cores from the server)."
    )
    optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimization level."
    )
    io_binding: bool = Field(True, description="Use IO binding on GPU providers.")
    memory_arena: bool = Field(
        True,
        description=(
            "Keep ONNX Runtime's CPU memory arena (buffers reused between runs; after a run with large attention "
            "maps it gives back what it holds free). False: every tensor from the system allocator."
        ),
    )
    cache_dir: Path | None = Field(
        None, description="Folder for ONNX Runtime caches (TensorRT engines); none: no cache."
    )

    # Batching
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most sequences in one ONNX Runtime call.")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="Longest wait for a batch to fill, from the oldest queued item (0: run at once)."
    )
    max_queue_size: int = Field(4096, ge=1, description="Most sequences waiting per model version; past it, 503.")
    batches_in_flight: int = Field(2, ge=1, le=64, description="Batches of one version running at once.")
    length_buckets: Annotated[list[int], NoDecode] = Field(
        [], description="Sequence-length bucket bounds for grouping, e.g. [16, 32, 64] (empty: no grouping)."
    )
    lone_batch_inline: bool = Field(
        True,
        description=(
            "Run a batch that has the worker to itself (no other request waiting, nothing else queued or running) on "
            "the event loop's thread instead of handing it to an inference thread and back, when it is cheap: no "
            "attention maps, and its tokens times the compute per token measured at warm-up within INLINE_MAX_MS."
        ),
    )
    inline_max_ms: float = Field(
        2.0, ge=0, description="Longest estimated compute of a batch run on the event loop's thread (milliseconds)."
    )
    max_batch_tokens: int = Field(
        0,
        ge=0,
        description=(
            "Most padded tokens (sequences x the longest) in one ONNX Runtime call (0: from the model: about "
            "225,000 / its parameters in millions, at least its maximum length, at most a full batch of it)."
        ),
    )
    explain_batch_mb: int = Field(
        256, ge=1, description="Most megabytes of attention maps one batch with maps may produce (bounds its size)."
    )
    batch_split_min: int = Field(
        4,
        ge=0,
        description=(
            "On CPU, run a batch sorted by length as ONNX Runtime calls of at least this many sequences, "
            "each padded to its own longest (0: one call per batch)."
        ),
    )

    # Request limits
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body, in bytes (413 past it).")
    max_instances: int = Field(256, ge=1, description="Most sequences in one request.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text, in characters.")
    max_occlusion_tokens: int = Field(
        256,
        ge=1,
        description=(
            "Most tokens (or occlusion windows) of one text an occlusion leaves out one at a time; past it, 400. "
            "Each counts as a sequence against MAX_INSTANCES and the queue."
        ),
    )
    max_explanation_values: int = Field(
        4 << 20,
        ge=1,
        description=(
            "Most attention values one answer may hold (self-attention maps: layers x heads x tokens² per sequence, "
            "plus each per-token output); past it, 400 before any work."
        ),
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Default deadline of a request, queueing included.")
    max_concurrency: int = Field(
        1024, ge=1, description="Most requests in progress at once; past it, 503 with Retry-After (health exempt)."
    )
    max_connections: int = Field(4096, ge=1, description="Most open connections (uvicorn's hard limit).")
    graceful_shutdown_s: float = Field(20.0, ge=0, description="Time in-flight requests get to finish on SIGTERM.")

    # Security and surface
    api_key: SecretStr | None = Field(None, description="When set, inference needs 'Authorization: Bearer <key>'.")
    admin_token: SecretStr | None = Field(None, description="When set, enables repository load/unload endpoints.")
    docs_enabled: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    ui_enabled: bool = Field(True, description="Serve the attention viewer page at /ui.")

    # Logs
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_requests: bool = Field(False, description="Log one structured line per request (costs throughput).")

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("length_buckets", "specific_versions", mode="before")
    @classmethod
    def _split_numbers(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_instances > self.max_queue_size:
            raise ValueError("max_instances cannot exceed max_queue_size: such a request could never be queued")
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError("grpc_port and port must differ (or set grpc_port to 0 to turn gRPC off)")
        if self.workers > 1 and self.admin_token is not None:
            raise ValueError("the repository load/unload endpoints need one worker: each worker has its own models")
        return self

    @property
    def threads(self) -> int:
        """Intra-op threads to use: the setting, or this process's share of the cores it may run on."""
        return self.intra_op_threads or max(1, usable_cores() // max(self.workers, 1))

    @property
    def large_model_threads(self) -> int:
        """Intra-op threads of a large model: the setting, or every core this process may run on."""
        return self.intra_op_threads or usable_cores()

    def worker_count(self, accelerated: bool) -> int:
        """``workers``, or when 0: one process per usable core (a cgroup CPU limit counts), as one event loop
        per process is the limit on CPU (bench/README.md); one when a GPU should have a single owner or models
        are loaded and unloaded through the admin endpoints."""
        if self.workers:
            return self.workers
        if accelerated or self.admin_token is not None:
            return 1
        return min(usable_cores(), MAX_WORKERS)
