"""A private PostgreSQL server in a temporary folder, for tests, benchmarks and development.

``initdb`` into a fresh folder and ``postgres`` listening only on a Unix socket in that folder
(no TCP port to collide with), trust authentication, ``fsync`` off (throw-away data). PostgreSQL
refuses to run as root: as root, the folder is given to the ``postgres`` user (created by
Debian's ``postgresql`` package) and the programs run as that user through ``setpriv``, which
executes them in place, so the pid we hold is the server's own. ``stop`` ends it by that pid
(SIGINT: PostgreSQL's fast shutdown, which closes every connection, as a crash or a restart
would be seen by clients); ``start`` again reuses the folder; ``cleanup`` stops it and removes
the folder.

    with LocalPostgres() as pg:
        url = pg.create_database("pbx")

``python -m pbx.pg_local start RUN_DIR`` leaves one running for ``scripts/cluster.sh`` (``main``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SUPERUSER = "pbx"
DEFAULT_BIN = Path("/usr/lib/postgresql")


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's program folder (Debian's layout)."""
    versions = sorted(
        (p for p in DEFAULT_BIN.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    return versions[-1]


class LocalPostgres:
    def __init__(self, bin_dir: Path | None = None, port: int = 5432) -> None:
        self.bin = bin_dir or postgres_bin()
        self.port = port  # only names the socket file (.s.PGSQL.<port>)
        self.root = Path(tempfile.mkdtemp(prefix="pbx-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def _as_user(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._as_user(argv), capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-k",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (the server's lifetime)
        self.process = subprocess.Popen(
            self._as_user(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [
                    str(self.bin / "pg_isready"),
                    "-q",
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                ],
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown by pid (every client connection is closed), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropped first if it exists); its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m pbx.pg_local start RUN_DIR [--database NAME]``: a server left running for
    ``scripts/cluster.sh``. Writes ``postgres.pid`` (the server's own pid, for a stop by pid:
    SIGINT, then remove the folder named in ``postgres.root``) and ``postgres.url`` in
    RUN_DIR, and prints the database's URL."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pbx.pg_local")
    parser.add_argument("command", choices=["start"])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--database", default="pbx")
    args = parser.parse_args(argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    pg = LocalPostgres()
    try:
        (args.run_dir / "postgres.root").write_text(f"{pg.root}\n")
        pg.start()
        assert pg.process is not None
        (args.run_dir / "postgres.pid").write_text(f"{pg.process.pid}\n")
        url = pg.create_database(args.database)
    except BaseException:
        pg.cleanup()
        raise
    (args.run_dir / "postgres.url").write_text(f"{url}\n")
    print(url)
    return 0  # the server outlives us (its own session); the caller stops it by pid


if __name__ == "__main__":  # pragma: no cover - run by scripts/cluster.sh
    raise SystemExit(main())
