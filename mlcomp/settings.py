"""Configuration from the environment, with an optional YAML file under the root folder.

Every value comes from, in order of precedence: an ``MLCOMP_*`` environment variable, the file
``$MLCOMP_ROOT/config.yml`` (keys in lower case: ``db_url``, ``broker_url``, ``token``, ``host``,
``port``, ``heartbeat_ttl``, ``stop_grace``, ``snapshot_max_mb``,
``grid_max_cells``, ...), then the default below.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from mlcomp.errors import ConfigError
from mlcomp.yamlfile import read_yaml

__all__ = ["Settings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where mlcomp keeps its state and how its processes reach each other.

    Attributes:
        root: folder for the SQLite database, snapshots, task folders and logdirs
            (``MLCOMP_ROOT``, default ``~/mlcomp``).
        db_url: SQLAlchemy URL (``MLCOMP_DB_URL``, default SQLite in WAL mode at ``root/mlcomp.db``).
        broker_url: Redis for many machines, e.g. ``redis://host:6379/0`` (``MLCOMP_BROKER_URL``):
            the bus's backend (:mod:`mlcomp.bus`); ``None``: PostgreSQL's LISTEN/NOTIFY with a
            PostgreSQL store, else a local socket (one machine).
        token: shared secret required by the UI and API beyond loopback (``MLCOMP_TOKEN``).
        host, port: where ``mlcomp server`` listens (default ``127.0.0.1:4201``).
        heartbeat_ttl: seconds after which a silent computer is dead and its tasks failed.
        stop_grace: seconds between SIGTERM and SIGKILL when a task is stopped.
        snapshot_max_mb: the largest code snapshot (MB) a DAG submission may store.
        allowed_hosts: with a token, the ``Host`` names the UI serves (``MLCOMP_ALLOWED_HOSTS``,
            comma-separated; ``*``, the default, allows any); without a token only loopback names.
        checkpoint_dirs: folders, besides a task's own logdir, from which a task may be resumed
            (``MLCOMP_CHECKPOINT_DIRS``, comma-separated).
        grid_max_cells: the most grid cells one submission may expand to (DAG-level cells times
            the tasks' cells), counted before expansion.
        cookie_secure: mark the UI's session cookie ``Secure`` (sent over https only) on every
            response (``MLCOMP_COOKIE_SECURE``: ``true``/``false``, ``1``/``0``, ``yes``/``no``;
            default false: ``Secure`` only on requests that came over https).
        trusted_proxies: how many reverse proxies in front of the UI set ``X-Forwarded-For`` and
            ``X-Forwarded-Proto`` (``MLCOMP_TRUSTED_PROXIES``, default 0: those headers are
            ignored); with 1 or more the UI takes the client's address and scheme from them
            (werkzeug's ``ProxyFix``), so a request that came over https gets a ``Secure`` cookie
            and login throttling counts the client, not the proxy. Set it only behind such a proxy:
            a client talking to the UI directly could otherwise forge them.
        login_attempts: failed logins and wrong bearer tokens one client address may send within
            ``login_window`` seconds; more are answered 429 with ``Retry-After`` (default 10).
        login_window: seconds over which ``login_attempts`` counts failures (default 60).
        shares: each project's weight in the fair share of GPU time (``MLCOMP_SHARES`` as
            ``a=2,b=1`` or a YAML mapping; a project not named weighs 1). Among waiting tasks of
            equal priority, the project furthest below its share goes first
            (:mod:`mlcomp.supervisor.fairshare`).
        fairshare_half_life: seconds after which a GPU-second a project used counts half in its
            fair share (default 86400, one day; Slurm's ``PriorityDecayHalfLife``).
        gpu_quota: the most GPUs each named project may hold at once (``MLCOMP_GPU_QUOTA`` as
            ``a=8,b=4`` or a YAML mapping; a project not named has no cap).
        preempt_min_run: seconds that must pass between two preemptions of one task (default 60),
            so tasks do not thrash.
        scheduler: ``fair`` (default): priority, then fair share between projects, with quotas and
            preemption; ``fifo``: priority, then arrival, nothing preempted (quotas still hold).
    """

    root: Path
    db_url: str
    broker_url: str | None = None
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 4201
    heartbeat_ttl: float = 15.0
    stop_grace: float = 10.0
    snapshot_max_mb: float = 50.0
    grid_max_cells: int = 10_000
    allowed_hosts: tuple[str, ...] = ("*",)
    checkpoint_dirs: tuple[str, ...] = ()
    cookie_secure: bool = False
    trusted_proxies: int = 0
    login_attempts: int = 10
    login_window: float = 60.0
    shares: dict[str, float] = dataclasses.field(default_factory=dict)
    fairshare_half_life: float = 86400.0
    gpu_quota: dict[str, int] = dataclasses.field(default_factory=dict)
    preempt_min_run: float = 60.0
    scheduler: str = "fair"

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"setting scheduler (MLCOMP_SCHEDULER or {self.root / 'config.yml'}): "
                              f"{self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")

    @property
    def tasks_dir(self) -> Path:
        """Folder holding one sub-folder per task (its code copy, logdir and outputs)."""
        return self.root / "tasks"

    @property
    def snapshots_dir(self) -> Path:
        """Folder of the content-addressed snapshot store."""
        return self.root / "snapshots"

    @property
    def data_dir(self) -> Path:
        """Folder for per-project data (``data/<project>``), shared by a project's DAGs."""
        return self.root / "data"

    @property
    def models_dir(self) -> Path:
        """Folder for per-project models (``models/<project>``, MLComp's), e.g. traced models."""
        return self.root / "models"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Reads settings from ``env`` (default ``os.environ``) and ``root/config.yml``.

        Raises:
            ConfigError: the config file is not a YAML mapping, has an unknown key, or a value has
                the wrong type.
        """
        env = os.environ if env is None else env
        root = Path(overrides.pop("root", None) or env.get("MLCOMP_ROOT") or "~/mlcomp").expanduser().absolute()
        values: dict = _read_file(root / "config.yml")
        for field in dataclasses.fields(cls):
            var = f"MLCOMP_{field.name.upper()}"
            if var in env and field.name != "root":
                values[field.name] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("db_url", f"sqlite:///{root / 'mlcomp.db'}")
        for name, typ in NUMBERS.items():
            if name in values:
                try:
                    values[name] = typ(values[name])
                except (TypeError, ValueError):
                    kind = "an integer" if typ is int else "a number"
                    raise ConfigError(f"setting {name} (MLCOMP_{name.upper()} or {root / 'config.yml'}): "
                                      f"{values[name]!r} is not {kind}") from None
        for name in LISTS:
            if name in values:
                values[name] = _names(name, values[name], root)
        for name in FLAGS:
            if name in values:
                values[name] = _flag(name, values[name], root)
        for name, (typ, low) in MAPPINGS.items():
            if name in values:
                values[name] = _mapping(name, values[name], typ, low, root)
        return cls(root=root, **values)


NUMBERS = {"port": int, "heartbeat_ttl": float, "stop_grace": float, "snapshot_max_mb": float,
           "grid_max_cells": int, "trusted_proxies": int, "login_attempts": int, "login_window": float,
           "fairshare_half_life": float, "preempt_min_run": float}

SCHEDULERS = ("fair", "fifo")

MAPPINGS = {"shares": (float, 0.0), "gpu_quota": (int, 0)}
"""Project → number settings: the type of the numbers and the bound they must exceed (shares) or
reach (quotas)."""


LISTS = ("allowed_hosts", "checkpoint_dirs")

FLAGS = ("cookie_secure",)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _flag(name: str, value, root: Path) -> bool:
    """A yes/no setting from a string (the environment, any case) or a YAML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"setting {name} (MLCOMP_{name.upper()} or {root / 'config.yml'}): {value!r} is not "
                      f"true or false (also 1/0, yes/no, on/off)")


def _mapping(name: str, value, typ: type, low, root: Path) -> dict:
    """A project → number setting from ``a=2,b=1`` (the environment) or a YAML mapping: shares
    must be above 0, quotas at least 0."""
    raw = value
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        value = dict(pairs) if all(len(pair) == 2 for pair in pairs) else None
    try:
        result = {str(key).strip(): typ(number) for key, number in value.items()}
        if any(isinstance(number, bool) for number in value.values()):
            raise TypeError
    except (AttributeError, TypeError, ValueError):
        result = None
    if result is None or any(number < low or (typ is float and number == low) for number in result.values()):
        bound = f"a number above {low:g}" if typ is float else f"an integer of at least {low}"
        raise ConfigError(f"setting {name} (MLCOMP_{name.upper()} or {root / 'config.yml'}): {raw!r} is not a "
                          f"mapping of project names to {bound} (or 'project=N,other=M')")
    return result


def _names(name: str, value, root: Path) -> tuple[str, ...]:
    """A list setting from a comma-separated string (the environment) or a YAML list."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"setting {name} (MLCOMP_{name.upper()} or {root / 'config.yml'}): {value!r} is not "
                          f"a list of strings (or a comma-separated string)")
    return tuple(item.strip() for item in items if item.strip())


def _read_file(path: Path) -> dict:
    if not path.exists():
        return {}
    data = read_yaml(path, ConfigError, "settings file").data or {}
    allowed = {f.name for f in dataclasses.fields(Settings)} - {"root"}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return dict(data)
