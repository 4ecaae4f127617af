"""Engines that run the shards of a stage: ``local`` (in this process, the default) and ``ray`` (Ray
workers on this machine or on a cluster started with ``ray start``; ``pip install "gadms[distributed]"``).

A stage is a :class:`ShardJob` (how to make its shard function, with the model backends it holds) and a
list of shard tasks (read one input shard, apply the shard function, commit the result: the functions
of :mod:`.stage`). An engine only decides where those run:

- :class:`LocalEngine` builds the shard function once in this process and runs the tasks in order;
- :class:`RayEngine` runs them as Ray work. A stage that holds a model (detect, pose, caption) runs on a
  pool of actors that each make the backends once (``num_gpus`` / ``num_cpus`` per actor, configurable
  per stage); a CPU stage (filter) runs as Ray tasks (or on the actors of the model stages that the
  same engine ran before it). Each task commits its own shard through
  :meth:`.shards.StageStore.commit`, the code the local engine uses, so the shard files, the rejection
  logs, the done markers and the manifest are the same whichever engine ran the stage, and resume,
  ``--retry-errors``, ``status`` and ``export`` do not need to know.

A worker killed mid-shard (the machine lost, out of memory, ``ray.kill``) loses nothing and duplicates
nothing: Ray restarts the actor (or runs the task again elsewhere) and the shard is done again from its
input; a shard is only counted once its marker is written, a commit replaces the shard's files by name,
and everything a task writes into the marker is decided by the driver before the task is sent, so a
task run twice writes the same shard twice.

The work directory must be at the same path on every machine of a cluster (a shared file system), as
for ``--shard i/n`` workers.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from .stage import ShardOutput

__all__ = [
    "ENGINES",
    "Deferred",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "RayOptions",
    "Runner",
    "ShardJob",
    "backend_name",
    "make_engine",
]

#: The engine names of ``--engine``.
ENGINES = ("local", "ray")

#: A stage's shard function: ``(shard name, input table) -> ShardOutput``.
Process = Callable[[str, "pa.Table"], "ShardOutput"]
#: One unit of work: given the shard function, do one shard (read, process, commit); returns the number
#: of items done (for the progress bar). Must be picklable for the Ray engine (a ``functools.partial``
#: of a module-level function).
ShardTask = Callable[[Process], int]

_INSTALL = 'the ray engine needs Ray: pip install "gadms[distributed]"'


def backend_name(backend: Any) -> str:
    """The name a stage records for ``backend`` in its settings: its ``name``, else its class name."""
    return str(getattr(backend, "name", type(backend).__name__))


@dataclass(frozen=True)
class Deferred:
    """A backend made where the shards run: ``factory(*args, **kwargs)``, called once per Ray actor (the
    model is loaded there, on the actor's GPU) or once in this process by the local engine.

    Example: ``Deferred(backends.make_detector, (backends.parse_spec(text, "--detector"),))``.
    """

    factory: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """Make the backend."""
        return self.factory(*self.args, **dict(self.kwargs))


def _resolve(backend: Any) -> Any:
    return backend.build() if isinstance(backend, Deferred) else backend


def _given(process: Process) -> Process:
    return process


@dataclass
class ShardJob:
    """How a stage makes its shard function where the shards run.

    Attributes:
        make_process: called as ``make_process(*backends, **options)``; returns the shard function.
        backends: backend objects, or :class:`Deferred` ones made where the shards run (once per actor).
        options: the other keywords of ``make_process`` (thresholds, batch size, ...).
        model: whether the backends hold a model: the Ray engine then runs the shards on a pool of actors
            that keep it loaded; otherwise (CPU stages) as Ray tasks.
        key: tells jobs apart (a worker that already built this job reuses it).
    """

    make_process: Callable[..., Process]
    backends: tuple = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    model: bool = False
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def given(cls, process: Process, *, model: bool = False) -> "ShardJob":
        """The job of a shard function made already (shipped as it is to Ray workers)."""
        return cls(_given, (process,), model=model)

    def build(self) -> tuple[Process, list[str]]:
        """Make the backends and the shard function; returns it and the backends' names."""
        made = [_resolve(b) for b in self.backends]
        return self.make_process(*made, **dict(self.options)), [backend_name(b) for b in made]


class Runner:
    """An engine opened for one job (:meth:`Engine.open`): ``names`` are the job's backend names (as
    recorded in the stage settings); :meth:`run` runs shard tasks."""

    names: list[str]

    def run(self, tasks: Sequence[ShardTask]) -> Iterator[int]:
        """Run ``tasks``; yield each one's result as it finishes (in any order). An exception raised by a
        task is raised here (the tasks still running finish on their own)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Engine:
    """Where the shards of a stage run (see the module docstring)."""

    name = "engine"

    def open(self, job: ShardJob) -> Runner:
        """Make ``job`` ready to run (load its models); use the result as a context manager."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine holds (Ray actors; a Ray instance it started)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _LocalRunner(Runner):
    def __init__(self, job: ShardJob) -> None:
        self.process, self.names = job.build()

    def run(self, tasks: Sequence[ShardTask]) -> Iterator[int]:
        for task in tasks:
            yield task(self.process)


class LocalEngine(Engine):
    """Everything in this process, one shard after the other (the default engine)."""

    name = "local"

    def open(self, job: ShardJob) -> Runner:
        return _LocalRunner(job)


# ----- Ray ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RayOptions:
    """Settings of the Ray engine (the ``--ray-*`` options of a stage).

    Attributes:
        address: ``None``: start a local Ray instance (stopped again by :meth:`RayEngine.close`);
            ``"auto"`` or ``"HOST:PORT"``: join the cluster started with ``ray start``.
        num_cpus, num_gpus: resources of each actor (model stages) or task (CPU stages); fractions are
            allowed (``num_gpus=0.5``: two actors per GPU).
        actors: actors of a model stage; ``None``: as many as the cluster's resources fit (GPUs /
            ``num_gpus``, else CPUs / ``num_cpus``), at most one per shard.
        max_retries: how often a shard whose worker died is run again (Ray restarts the actor or reruns
            the task); application errors are not retried (they are raised).
        local_cpus: CPUs of a local Ray instance (``None``: all of this machine's).
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    actors: int | None = None
    max_retries: int = 3
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus < 0:
            raise ValueError(f"--ray-num-cpus must be >= 0, got {self.num_cpus}")
        if self.num_gpus < 0:
            raise ValueError(f"--ray-num-gpus must be >= 0, got {self.num_gpus}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"--ray-actors must be >= 1, got {self.actors}")
        if self.max_retries < 0:
            raise ValueError(f"--ray-max-retries must be >= 0, got {self.max_retries}")


def import_ray() -> Any:
    """``ray``, or an :class:`ImportError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(_INSTALL) from None
    return ray


class _ShardWorker:
    """The body of the Ray actors of model stages: builds a job's backends once, then runs its tasks.

    A restarted actor (after its process died) builds the job again on its first task.
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._built: tuple[Process, list[str]] | None = None

    def _build(self, job: ShardJob) -> tuple[Process, list[str]]:
        if self._key != job.key or self._built is None:
            self._built = self._key = None  # free the previous stage's model first
            self._built = job.build()
            self._key = job.key
        return self._built

    def describe(self, job: ShardJob) -> list[str]:
        return self._build(job)[1]

    def run(self, job: ShardJob, task: ShardTask) -> int:
        return task(self._build(job)[0])


#: The shard function last built in this Ray worker process (CPU stages): ``(job key, process)``.
_TASK_CACHE: dict[str, Process] = {}


def _run_task(job: ShardJob, task: ShardTask) -> int:
    process = _TASK_CACHE.get(job.key)
    if process is None:
        _TASK_CACHE.clear()
        process = _TASK_CACHE[job.key] = job.build()[0]
    return task(process)


_REMOTES: dict[str, Any] = {}


def _remote(name: str) -> Any:
    """The Ray remote class / function of this module (made on first use: importing this module needs
    no Ray)."""
    if name not in _REMOTES:
        ray = import_ray()
        _REMOTES["actor"] = ray.remote(_ShardWorker)
        _REMOTES["task"] = ray.remote(_run_task)
    return _REMOTES[name]


def _unwrap(ray: Any, error: Exception) -> Exception:
    """The exception a Ray task raised (``ValueError``, ...) rather than Ray's wrapper, so the command
    line reports it as it would with the local engine."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        return cause
    return error


class RayEngine(Engine):
    """Shards as Ray work: model stages on a pool of actors that load the backends once, CPU stages as
    Ray tasks (see the module docstring). Connects on first use: a local Ray instance by default
    (stopped by :meth:`close`), or the cluster at ``options.address``; an initialised Ray is used as it
    is (and left running).

    Actors are kept between the stages that this engine runs (they build each stage's job once; a CPU
    stage then runs on them too, rather than wait for the resources they hold); :meth:`close` ends
    them. For other resources per stage, use one engine per stage.
    """

    name = "ray"

    def __init__(self, options: RayOptions = RayOptions()) -> None:
        self.options = options
        self._ray: Any = None
        self._started = False
        self._actors: list[Any] = []

    # ----- connection -------------------------------------------------------------------------------
    def connect(self) -> Any:
        """Initialise Ray if needed; returns the ``ray`` module."""
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
            if self.options.address:
                kwargs["address"] = self.options.address
            else:
                kwargs["num_cpus"] = self.options.local_cpus
            try:
                ray.init(**kwargs)
            except ConnectionError as error:
                raise ValueError(
                    f"--ray-address {self.options.address}: cannot join a Ray cluster there "
                    f"(start one with `ray start --head`): {error}"
                ) from None
            self._started = True
        self._ray = ray
        return ray

    def release_actors(self) -> None:
        """End this engine's actors (they free their CPUs and GPUs)."""
        for actor in self._actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
        self._actors = []

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        self.release_actors()
        if self._started:
            ray.shutdown()  # a local instance stops; from a cluster, this driver disconnects
        self._ray, self._started = None, False

    # ----- jobs -------------------------------------------------------------------------------------
    def open(self, job: ShardJob) -> Runner:
        ray = self.connect()
        self._check_resources(ray)
        return _RayRunner(self, ray, job)

    def _check_resources(self, ray: Any) -> None:
        resources = ray.cluster_resources()
        if self.options.num_gpus > 0 and resources.get("GPU", 0) <= 0:
            raise ValueError(
                f"--ray-num-gpus {self.options.num_gpus}: the Ray cluster has no GPU "
                "(use --ray-num-gpus 0 on CPUs, or join a cluster with GPUs with --ray-address)"
            )
        if self.options.num_cpus > resources.get("CPU", 0):
            raise ValueError(
                f"--ray-num-cpus {self.options.num_cpus}: more than the Ray cluster's "
                f"{resources.get('CPU', 0):g} CPUs"
            )

    def pool_size(self, ray: Any, shards: int) -> int:
        """Actors for a model stage of ``shards`` shards (see :class:`RayOptions`.actors)."""
        if self.options.actors is not None:
            return self.options.actors
        resources = ray.cluster_resources()
        if self.options.num_gpus > 0:
            fit = resources.get("GPU", 0) / self.options.num_gpus
        elif self.options.num_cpus > 0:
            fit = resources.get("CPU", 1) / self.options.num_cpus
        else:
            fit = resources.get("CPU", 1)
        return max(1, min(max(shards, 1), int(fit)))

    def actors(self, ray: Any, count: int) -> list[Any]:
        """``count`` actors (started now where this engine has fewer)."""
        options = self.options
        while len(self._actors) < count:
            self._actors.append(
                _remote("actor")
                .options(
                    num_cpus=options.num_cpus,
                    num_gpus=options.num_gpus,
                    max_restarts=options.max_retries,
                    max_task_retries=options.max_retries,
                )
                .remote()
            )
        return self._actors[:count]


class _RayRunner(Runner):
    def __init__(self, engine: RayEngine, ray: Any, job: ShardJob) -> None:
        self.engine, self.ray, self.job = engine, ray, job
        self.job_ref = ray.put(job)
        # a CPU stage after model stages of this engine runs on their actors: started already, and
        # holding the CPUs (or GPUs) that its tasks would wait for
        self.on_actors = job.model or bool(engine._actors)
        if self.on_actors:
            # the backends are made in the actors: their names come from there (and a backend that
            # cannot be made fails here, before any shard)
            self._pool = engine.actors(ray, 1)
            try:
                self.names = ray.get(self._pool[0].describe.remote(self.job_ref))
            except Exception as error:
                raise _unwrap(ray, error) from error
        else:
            self._pool = []
            self.names = [backend_name(_resolve(b)) for b in job.backends]

    def run(self, tasks: Sequence[ShardTask]) -> Iterator[int]:
        if not tasks:
            return
        ray = self.ray
        if self.on_actors:
            finished = self._submit_to_actors(tasks)
        else:
            options = self.engine.options
            remote = _remote("task").options(
                num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=options.max_retries
            )
            finished = _as_finished(ray, [remote.remote(self.job_ref, task) for task in tasks])
        for ref in finished:
            try:
                value = ray.get(ref)
            except Exception as error:
                raise _unwrap(ray, error) from error
            yield value

    def _submit_to_actors(self, tasks: Sequence[ShardTask]) -> Iterator[Any]:
        """Hand the tasks to the actors, two at a time per actor (one running, one waiting), each next
        task to the actor that finished one; yields the result references as they finish."""
        ray = self.ray
        actors = self.engine.actors(ray, self.engine.pool_size(ray, len(tasks)))
        queue = list(tasks)[::-1]
        running: dict[Any, Any] = {}  # result ref -> actor

        def submit(actor: Any) -> None:
            if queue:
                running[actor.run.remote(self.job_ref, queue.pop())] = actor

        for _ in range(2):
            for actor in actors:
                submit(actor)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            submit(actor)
            yield done[0]


def _as_finished(ray: Any, refs: list[Any]) -> Iterator[Any]:
    waiting = refs
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        yield done[0]


def make_engine(name: str, options: RayOptions | None = None) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``), with ``options`` for Ray.

    Raises:
        ValueError: for another name, naming ``--engine``.
        ImportError: for ``ray`` without Ray installed (naming ``pip install "gadms[distributed]"``).
    """
    if name == "local":
        return LocalEngine()
    if name == "ray":
        import_ray()
        return RayEngine(options or RayOptions())
    raise ValueError(f"--engine: unknown engine {name!r}; use one of {', '.join(ENGINES)}")
