"""Shared fixtures: stores on SQLite and on real PostgreSQL and MariaDB servers started for the
session, and the ML-100K sample."""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrec.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (run as `postgres` when root)."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="lmrec-pg-"))
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(
            ["initdb", "-D", str(data), "-A", "trust", "-U", "lmrec", "-E", "UTF8", "--no-sync"]
        )
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            ["pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"]
        )
        self.data = data

    def _run(self, cmd: list[str]) -> None:
        cmd = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://lmrec@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=lmrec dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if _pg_bin() is None:
        if os.environ.get("LMREC_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (LMREC_REQUIRE_POSTGRES) but not installed")
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    server = PostgresServer()
    yield server
    server.stop()


MARIADB_BIN = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL = Path("/usr/bin/mariadb-install-db")


class MariaDBServer:
    """A throwaway MariaDB server on a free loopback port, in a temporary data directory.

    Set up as in production: `mariadb-install-db` creates the system tables (grants on), the
    administrator logs in only through the server's own socket as the same system user, and the tests connect over TCP as the
    user `lmrec` with a password, allowed all on the databases `t_*` only. The server runs as
    `mysql` when the tests run as root. `--no-defaults`: /etc/mysql is not read, so the server
    has MariaDB's own defaults (latin1, case-insensitive collations) and the store must set
    utf8mb4 and its collation itself. Durability is off (`innodb_flush_log_at_trx_commit=0`,
    no doublewrite) for speed, as `fsync=off` for PostgreSQL.
    """

    password = "lmrec-test"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lmrec-my-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "mysql", "mysql")
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        user = ["--user=mysql"] if self.as_root else []
        install = [str(MARIADB_INSTALL), "--no-defaults", *user, f"--datadir={self.data}"]
        install += ["--auth-root-authentication-method=socket", "--skip-test-db"]
        install += ["--innodb-log-file-size=8M"]
        self._check(subprocess.run(install, capture_output=True, text=True, cwd=self.dir))
        self.port = _free_port()
        cmd = [str(MARIADB_BIN), "--no-defaults", *user, f"--datadir={self.data}"]
        cmd += [f"--socket={self.sock}", f"--port={self.port}", "--bind-address=127.0.0.1"]
        cmd += [f"--pid-file={self.dir / 'pid'}", f"--log-error={self.dir / 'log'}"]
        cmd += ["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"]
        cmd += ["--innodb-buffer-pool-size=128M", "--skip-name-resolve"]
        cmd += ["--innodb-log-file-size=8M"]
        with open(self.dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=err, stderr=err)
        self._wait_ready()
        self.root_sql(
            f"CREATE USER 'lmrec'@'127.0.0.1' IDENTIFIED BY '{self.password}'; "
            "GRANT ALL PRIVILEGES ON `t\\_%`.* TO 'lmrec'@'127.0.0.1'"
        )

    @staticmethod
    def _check(res: subprocess.CompletedProcess) -> None:
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(res.args)} failed:\n{res.stdout}\n{res.stderr}")

    def _wait_ready(self) -> None:
        import time

        for _ in range(600):
            if self.proc.poll() is not None:
                log = (self.dir / "log").read_text(errors="replace")
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{log}")
            if self.sock.exists():
                try:
                    self.root_sql("SELECT 1")
                    return
                except RuntimeError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("mariadbd did not start in 30 s")

    def root_sql(self, sql: str) -> None:
        """Run SQL as root through the socket (the mariadb client, as an admin would)."""
        # mariadb-install-db gives socket (unix_socket) logins to root and to the user who ran
        # it, each only for the system user of the same name.
        admin = "root" if self.as_root else getpass.getuser()
        cmd = ["mariadb", "--no-defaults", f"--socket={self.sock}", "-u", admin, "-e", sql]
        self._check(subprocess.run(cmd, capture_output=True, text=True))

    def url(self, db: str) -> str:
        return f"mysql://lmrec:{self.password}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.root_sql(f"CREATE DATABASE `{name}`")
        return self.url(name)

    def stop(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    if not (MARIADB_BIN.exists() and MARIADB_INSTALL.exists()):
        if os.environ.get("LMREC_REQUIRE_MYSQL"):
            pytest.fail("MariaDB is required (LMREC_REQUIRE_MYSQL) but not installed")
        pytest.skip("MariaDB binaries not installed (apt-get install mariadb-server)")
    server = MariaDBServer()
    yield server
    server.stop()


#: The databases every store test runs on.
STORE_BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


def new_store_url(request: pytest.FixtureRequest, backend: str, tmp: Path) -> str:
    """A URL of an empty store on this backend (servers started once per session)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'store.db'}"
    server = "postgres" if backend == "postgresql" else "mariadb"
    return request.getfixturevalue(server).new_database()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store, on SQLite, PostgreSQL and MariaDB."""
    return new_store_url(request, request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    from lmrec.io.sample import fetch_ml100k

    return fetch_ml100k()


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ML-100K sample as a Dataset (imported once into a SQLite store)."""
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample

    db = tmp_path_factory.mktemp("ml100k") / "ml.db"
    with Store(f"sqlite:///{db}") as s:
        import_sample(s)
        return Dataset.from_store(s, name="ml-100k")
