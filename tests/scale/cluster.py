"""A production-shaped voiceagent on loopback: N web processes, M observer workers, one local engine.

Plain Python, used by the scale tests (tests/scale/) and the bench/ scripts alike::

    with Cluster(web=2, workers=2) as cluster:
        cluster.web_urls                      # ["http://127.0.0.1:41234", …]
        cluster.create_staff_users(10)        # ["bench-0", …] (password PASSWORD)
        cluster.workers[0].kill()             # SIGKILL; .terminate() SIGTERM; .restart()
        cluster.sql("SELECT count(*) FROM calls_call")

Each cluster gets what no other test shares: a fresh PostgreSQL database (created and migrated here,
dropped at the end), a random key prefix on the Redis server (its keys deleted at the end, never a
FLUSHDB), and free ports. The web processes run `manage.py serve --no-engine --no-observer` (daphne
without the embedded observer); the workers run the observer worker command (`manage.py observe`
when it exists, else `manage.py runworker call-observer`); the engine runs `python -m realtime_local`
without speech (protocol only, starts in a second). Every process writes its output to a log file
under `log_dir`, so a failing test can show what each said (`cluster.logs()`).

The PostgreSQL server and Redis server are the machine's by default; the fault tests pass the URLs
of throwaway instances they may restart (`pg_admin_url=`, `redis_url=`).
"""

from __future__ import annotations

import base64
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

REPO = Path(__file__).resolve().parents[2]
MANAGE = str(REPO / "manage.py")

#: The machine's PostgreSQL (any database on it: the cluster only needs to CREATE/DROP DATABASE).
DEFAULT_PG_ADMIN_URL = os.environ.get("CLUSTER_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
#: The machine's Redis; isolation comes from the key prefix.
DEFAULT_REDIS_URL = os.environ.get("CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Password of every user `create_staff_users` makes.
PASSWORD = "cluster-pass-9f2c"
ENGINE_API_KEY = "sk-cluster-local"

#: What a worker prints once it consumes its channel (runworker, or the lease helper's `observe`).
WORKER_READY = re.compile(
    r"Running worker for channels|observ\w* (?:worker )?(?:ready|running|started)", re.I
)


class ClusterError(RuntimeError):
    """A process did not start or become ready; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port free on loopback right now (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int) -> int:
    """The first of `count` consecutive TCP ports free on loopback now (honcho gives its web
    processes PORT, PORT+1, …). Chosen below the kernel's ephemeral range, where no outgoing
    connection (to PostgreSQL, Redis, a test's client) takes one meanwhile: in CI the port after a
    `free_port()` was such a connection's, and the second web process could not listen."""
    low, _ = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        base = random.randrange(10_000, max(10_001, low - count))
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports on loopback")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Proc:
    """One process of the cluster: how to (re)start it, its log, and how to know it is ready."""

    name: str
    role: str  # "engine", "web" or "worker"
    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    ready_url: str | None = None
    ready_log: re.Pattern[str] | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log_offset: int = 0

    @property
    def url(self) -> str:
        """Base URL of a web or engine process (no trailing slash)."""
        assert self.port is not None, f"{self.name} has no port"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (its output appended to the log file, in a session of its own)."""
        if self.alive:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts + 1} of {self.name}: {' '.join(self.command)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Block until the process answers its readiness check; the seconds it took."""
        started = time.monotonic()
        while True:
            if not self.alive:
                code = self.process.returncode if self.process is not None else None
                raise ClusterError(f"{self.name} exited ({code}) before it was ready:\n{self.log_tail()}")
            if self.ready_url is not None and _http_status(self.ready_url) == 200:
                return time.monotonic() - started
            if self.ready_log is not None and self.ready_log.search(self.log_since_start()):
                return time.monotonic() - started
            if self.ready_url is None and self.ready_log is None:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise ClusterError(f"{self.name} not ready within {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL, and reap it (a crash: no cleanup runs)."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to `grace_s` for a graceful exit (then SIGKILL); the exit status."""
        self.signal(signal.SIGTERM)
        code = self.wait(grace_s)
        if code is None:
            self.kill()
        return code

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None if still running after `timeout_s`."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop_signal(self, signum: int) -> None:
        """SIGSTOP/SIGCONT and the like, without waiting."""
        self.signal(signum)

    def restart(self, *, ready_timeout_s: float = 60.0) -> None:
        """Stop (SIGTERM, then SIGKILL) if running, start again, wait until ready."""
        if self.alive:
            self.terminate()
        self.start()
        self.wait_ready(ready_timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]


@dataclass
class Cluster:
    """N web + M worker processes and one engine on fresh, private state. Use as a context manager,
    or call `start()` then `stop()`."""

    web: int = 2
    workers: int = 2
    engine: bool = True
    #: Extra environment for the web and worker processes (e.g. rate-limit or pool settings).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Extra arguments for `python -m realtime_local`.
    engine_args: Sequence[str] = ()
    engine_max_calls: int = 500
    #: Overrides REALTIME_BASE_URL (e.g. a fake upstream for fault tests); the engine still runs if asked.
    realtime_base_url: str | None = None
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    redis_url: str = DEFAULT_REDIS_URL
    log_dir: Path | None = None
    ready_timeout_s: float = 90.0
    #: The worker command; None picks `manage.py observe` when it exists, else `runworker call-observer`.
    worker_command: Sequence[str] | None = None

    def __post_init__(self) -> None:
        token = uuid.uuid4().hex[:10]
        self.db_name = f"va_cluster_{token}"
        self.database_url = _with_database(self.pg_admin_url, self.db_name)
        self.redis_prefix = f"va-cluster-{token}"
        self.signing_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.secret_key = secrets.token_urlsafe(50)
        self._own_log_dir = self.log_dir is None
        self.log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="va-cluster-"))
        self.engine_proc: Proc | None = self._engine_proc() if self.engine else None
        self.webs: list[Proc] = []
        self.worker_procs: list[Proc] = []
        self._db_created = False

    # --- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Create and migrate the database, start every process, wait until all are ready."""
        try:
            self.create_database()
            self.manage("migrate", "--noinput", timeout_s=180)
            if self.engine_proc is not None:
                self.engine_proc.start()
            self.webs = [self._web_proc(index) for index in range(self.web)]
            self.worker_procs = [self._worker_proc(index) for index in range(self.workers)]
            for proc in [*self.webs, *self.worker_procs]:
                proc.start()
            for proc in self.processes:
                proc.wait_ready(self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every process (SIGKILL after a grace), drop the database, delete the Redis keys."""
        procs = self.processes
        for proc in procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            if proc.wait(max(0.1, deadline - time.monotonic())) is None:
                proc.kill()
        self.drop_database()
        self.delete_redis_keys()

    @property
    def processes(self) -> list[Proc]:
        engine = [self.engine_proc] if self.engine_proc is not None else []
        return [*engine, *self.webs, *self.worker_procs]

    @property
    def web_urls(self) -> list[str]:
        return [proc.url for proc in self.webs]

    @property
    def engine_url(self) -> str:
        """The engine's base URL (no /v1)."""
        assert self.engine_proc is not None, "no engine in this cluster"
        return self.engine_proc.url

    @property
    def realtime_url(self) -> str:
        """What the product uses as REALTIME_BASE_URL."""
        if self.realtime_base_url is not None:
            return self.realtime_base_url.rstrip("/")
        return self.engine_url + "/v1"

    def logs(self) -> dict[str, str]:
        """Every process's whole log, by process name."""
        return {proc.name: proc.log_text() for proc in self.processes}

    def log_report(self, chars: int = 2500) -> str:
        """The end of every log, for an assertion message."""
        return "\n".join(
            f"--- {proc.name} (pid {proc.pid})\n{proc.log_tail(chars)}" for proc in self.processes
        )

    # --- processes --------------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        """The environment of the web and worker processes (and of `manage()`)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("REALTIME_LOCAL_", "PYTEST_", "DJANGO_"))
            and key not in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "REALTIME_BASE_URL")
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
                "PYTHONUNBUFFERED": "1",
                "DEBUG": "false",
                "SECRET_KEY": self.secret_key,
                "SECURE_COOKIES": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "REDIS_KEY_PREFIX": self.redis_prefix,
                "OPENAI_API_KEY": "",
                "OPENAI_SIGNING_SECRET": self.signing_secret,
                "REALTIME_LOCAL_API_KEY": ENGINE_API_KEY,
                "LOG_LEVEL": "INFO",
            }
        )
        if self.engine or self.realtime_base_url is not None:
            env["REALTIME_BASE_URL"] = self.realtime_url
        env.update(self.env)
        return env

    def _engine_proc(self) -> Proc:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_LOCAL_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["REALTIME_LOCAL_WEBHOOK_SECRET"] = self.signing_secret
        command = [
            sys.executable,
            "-m",
            "realtime_local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            ENGINE_API_KEY,
            "--no-speech",
            "--no-sip",
            "--loopback-candidates",
            "--max-calls",
            str(self.engine_max_calls),
            *self.engine_args,
        ]
        assert self.log_dir is not None
        return Proc(
            name="engine",
            role="engine",
            command=command,
            env=env,
            port=port,
            log_path=self.log_dir / "engine.log",
            ready_url=f"http://127.0.0.1:{port}/healthz",
        )

    def _web_proc(self, index: int) -> Proc:
        port = free_port()
        command = [
            sys.executable,
            MANAGE,
            "serve",
            "--no-engine",
            "--no-observer",
            "--no-collectstatic",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        assert self.log_dir is not None
        return Proc(
            name=f"web{index}",
            role="web",
            command=command,
            env=self.base_env(),
            port=port,
            log_path=self.log_dir / f"web{index}.log",
            ready_url=f"http://127.0.0.1:{port}/readyz",
        )

    def _worker_proc(self, index: int) -> Proc:
        assert self.log_dir is not None
        env = self.base_env()
        env["OBSERVER_WORKER_NAME"] = f"worker{index}"
        return Proc(
            name=f"worker{index}",
            role="worker",
            command=[sys.executable, MANAGE, *self.worker_args()],
            env=env,
            log_path=self.log_dir / f"worker{index}.log",
            ready_log=WORKER_READY,
        )

    def worker_args(self) -> list[str]:
        if self.worker_command is not None:
            return list(self.worker_command)
        if (REPO / "calls" / "management" / "commands" / "observe.py").exists():
            return ["observe"]
        return ["runworker", "call-observer"]

    def add_web(self) -> Proc:
        """Start one more web process (ready when this returns)."""
        proc = self._web_proc(len(self.webs))
        self.webs.append(proc)
        proc.start()
        proc.wait_ready(self.ready_timeout_s)
        return proc

    def add_worker(self) -> Proc:
        """Start one more worker process (ready when this returns)."""
        proc = self._worker_proc(len(self.worker_procs))
        self.worker_procs.append(proc)
        proc.start()
        proc.wait_ready(self.ready_timeout_s)
        return proc

    # --- state ------------------------------------------------------------------------------------
    def create_database(self) -> None:
        with psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True

    def drop_database(self) -> None:
        if not self._db_created:
            return
        try:
            with psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False
        except psycopg.Error as exc:  # a stopped throwaway server: nothing left to drop
            print(f"cluster: could not drop {self.db_name}: {exc}", file=sys.stderr)

    def delete_redis_keys(self) -> None:
        """Delete this cluster's keys (by prefix; other users of the server keep theirs)."""
        try:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()
        except redis.RedisError as exc:
            print(f"cluster: could not delete Redis keys {self.redis_prefix}*: {exc}", file=sys.stderr)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the cluster's database; its rows ([] when it returns none)."""
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(query, params or None)
            return list(cursor.fetchall()) if cursor.description is not None else []

    def manage(self, *args: str, timeout_s: float = 120.0, input_text: str | None = None) -> str:
        """Run `manage.py <args>` against the cluster's database and Redis; its output."""
        result = subprocess.run(
            [sys.executable, MANAGE, *args],
            cwd=REPO,
            env=self.base_env(),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def create_staff_users(self, count: int, *, prefix: str = "staff") -> list[str]:
        """`count` staff users (password PASSWORD), made in one process; their usernames."""
        names = [f"{prefix}-{index}" for index in range(count)]
        script = (
            "from django.contrib.auth.hashers import make_password\n"
            "from django.contrib.auth.models import User\n"
            f"password = make_password({PASSWORD!r})\n"
            f"users = [User(username=n, password=password, is_staff=True) for n in {names!r}]\n"
            "User.objects.bulk_create(users, ignore_conflicts=True)\n"
        )
        self.manage("shell", "-c", script)
        return names

    def create_sessions(self, usernames: Sequence[str]) -> dict[str, str]:
        """A signed-in session per user, written straight to the session store (no login form: its
        password hashing would cost a second of CPU per user); username → session key. Send it as
        the `sessionid` cookie."""
        script = (
            "from importlib import import_module\n"
            "from django.conf import settings\n"
            "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY\n"
            "from django.contrib.auth.models import User\n"
            "Store = import_module(settings.SESSION_ENGINE).SessionStore\n"
            f"for user in User.objects.filter(username__in={list(usernames)!r}):\n"
            "    session = Store()\n"
            "    session[SESSION_KEY] = str(user.pk)\n"
            "    session[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
            "    session[HASH_SESSION_KEY] = user.get_session_auth_hash()\n"
            "    session.create()\n"
            "    print(user.username, session.session_key)\n"
        )
        output = self.manage("shell", "-v", "0", "-c", script, timeout_s=300)
        wanted = set(usernames)
        pairs = (line.split(" ", 1) for line in output.splitlines() if " " in line)
        return {name: key for name, key in pairs if name in wanted}

    def cleanup_logs(self) -> None:
        """Remove the log directory when the cluster made it (keep it for a failing test instead)."""
        if self._own_log_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def wait_until(check: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; that value. Raises AssertionError naming
    `what` after `timeout_s` (a bound against hangs, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)
