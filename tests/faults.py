"""Fault injection for integration tests: a TCP proxy that can cut every
connection at once, and a private PostgreSQL server that can be stopped and
started (the machine's shared services are never touched).

    with TcpProxy("127.0.0.1", 6379) as proxy:      # point a client at proxy.port
        proxy.cut()        # every open connection reset, new ones reset at once
        proxy.restore()    # accepting and relaying again

    pg = PrivatePostgres()                           # initdb + start on a free port
    pg.create_database("meridian", migrate_role="region")
    url = pg.url("meridian")
    pg.stop("fast"); pg.start(); pg.destroy()
"""
from __future__ import annotations

import glob
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.harness import spawning

ROOT = Path(__file__).resolve().parent.parent

_BUFFER_LIMIT = 1 << 20  # stop reading a side while this much waits for the other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a cut cable looks to the peer: no orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pipe:
    """One proxied connection: the client's socket and ours to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        self.out = {client: bytearray(), upstream: bytearray()}  # bytes waiting to be written to a socket
        self.closing = False  # a side hit EOF: flush what is pending, then close both
        self.registered: set[socket.socket] = set()

    def other(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def sockets(self):
        return self.client, self.upstream


class TcpProxy:
    """A TCP proxy on a free 127.0.0.1 port (`.port`) to target_host:target_port,
    relaying in one selector thread.

    `cut()` resets every open connection, both sides, at once, and resets each new
    connection as soon as it is accepted until `restore()`. The listening port is
    kept through a cut, so clients reconnect to the same address afterwards.
    """

    def __init__(self, target_host: str, target_port: int, port: int = 0, listen_host: str = "127.0.0.1"):
        """listen_host: another local address to listen on (tests/netns.py: the
        root side of a veth, for processes in network namespaces)."""
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "listener")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._commands: list[tuple[str, threading.Event]] = []
        self._cut = False
        self._closed = False
        self.accepted = 0  # connections accepted while not cut
        self.refused = 0   # connections reset because the proxy was cut
        self._thread = threading.Thread(target=self._run, name=f"TcpProxy-{self.port}", daemon=True)
        self._thread.start()

    # --- public ---------------------------------------------------------------
    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    def cut(self) -> None:
        """Reset every open connection and every new one until restore()."""
        self._command("cut")

    def restore(self) -> None:
        self._command("restore")

    def close(self) -> None:
        if self._closed:
            return
        if self._thread.is_alive():
            self._command("close")
            self._thread.join(10)
        self._closed = True

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TcpProxy {self.listen_host}:{self.port} -> {self.target[0]}:{self.target[1]}{' CUT' if self._cut else ''}>"

    # --- the loop thread --------------------------------------------------------
    def _command(self, name: str) -> None:
        """Run a state change in the loop thread and wait until it is done, so
        that on return the cut (or restore) is in effect."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is closed")
        done = threading.Event()
        with self._lock:
            self._commands.append((name, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError(f"{self!r}: {name} not applied within 10 s")

    def _run(self) -> None:
        try:
            while True:
                for key, mask in self._sel.select(timeout=1.0):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        if self._drain_commands():
                            return
                    else:
                        self._io(key.data, key.fileobj, mask)
        finally:
            for pipe in list(self._pipes):
                self._drop(pipe, reset=True)
            for sock in (self._listener, self._wake_r, self._wake_w):
                try:
                    sock.close()
                except OSError:
                    pass
            self._sel.close()
            with self._lock:
                for _, done in self._commands:
                    done.set()
                self._commands.clear()

    def _drain_commands(self) -> bool:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            commands, self._commands = self._commands, []
        stop = False
        for name, done in commands:
            if name == "cut":
                self._cut = True
                for pipe in list(self._pipes):
                    self._drop(pipe, reset=True)
            elif name == "restore":
                self._cut = False
            elif name == "close":
                stop = True
            done.set()
        return stop

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self._cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _reset(client)  # the target is down: the client sees what it would see
                continue
            self.accepted += 1
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(client, upstream)
            self._pipes.add(pipe)
            for sock in pipe.sockets():
                self._sel.register(sock, selectors.EVENT_READ, pipe)
                pipe.registered.add(sock)

    def _io(self, pipe: _Pipe, sock: socket.socket, mask: int) -> None:
        if pipe not in self._pipes:
            return
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(65536)
                if data:
                    pipe.out[pipe.other(sock)] += data
                else:
                    pipe.closing = True
            if mask & selectors.EVENT_WRITE and pipe.out[sock]:
                sent = sock.send(pipe.out[sock])
                del pipe.out[sock][:sent]
            # Write eagerly what the read just queued for the other side.
            other = pipe.other(sock)
            if pipe.out[other]:
                try:
                    sent = other.send(pipe.out[other])
                    del pipe.out[other][:sent]
                except BlockingIOError:
                    pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(pipe, reset=True)
            return
        if pipe.closing and not any(pipe.out.values()):
            self._drop(pipe, reset=False)
            return
        for s in pipe.sockets():
            events = 0
            if not pipe.closing and len(pipe.out[pipe.other(s)]) < _BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if pipe.out[s]:
                events |= selectors.EVENT_WRITE
            registered = s in pipe.registered
            if events and registered:
                self._sel.modify(s, events, pipe)
            elif events:
                self._sel.register(s, events, pipe)
                pipe.registered.add(s)
            elif registered:  # back-pressure: read nothing more until the other side drains
                self._sel.unregister(s)
                pipe.registered.discard(s)

    def _drop(self, pipe: _Pipe, reset: bool) -> None:
        self._pipes.discard(pipe)
        for sock in pipe.sockets():
            if sock in pipe.registered:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
            if reset:
                _reset(sock)
            else:
                try:
                    sock.close()
                except OSError:
                    pass


# --- a private PostgreSQL server ------------------------------------------------------
def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("no PostgreSQL server binaries (pg_ctl) under /usr/lib/postgresql/*/bin or on PATH")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb into a temp dir, trust auth, a free
    port on 127.0.0.1, its socket in the temp dir), started on construction.

    As root, initdb and postgres run as the `postgres` OS user (they refuse root).
    Fault injection: `stop("fast")` (clients disconnected, clean shutdown),
    `stop("immediate")` (a crash: recovery on next start), then `start()`.
    """

    def __init__(self, port: int | None = None, settings: dict[str, str] | None = None, start: bool = True):
        spawning("a private PostgreSQL")
        self.bindir = _pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="meridian-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = port or _free_port()
        self.user = "postgres"
        # Speed over durability: the data only needs to survive a server restart,
        # not a machine crash, and the OS page cache survives a postgres crash.
        self.settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                         "max_connections": "200", **(settings or {})}
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--no-sync", "--locale=C")
        if start:
            self.start()

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else cmd

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if out.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {out.returncode}: {out.stderr.strip() or out.stdout.strip()}"
                               f"\n{self.log_tail()}")
        return out

    # --- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        opts = " ".join([f"-p {self.port}", f"-k {self.dir}", "-c listen_addresses=127.0.0.1",
                         *(f"-c {k}={v}" for k, v in self.settings.items())])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                  "-o", opts, "start", timeout=timeout + 10)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """mode: "smart" | "fast" | "immediate" (pg_ctl's shutdown modes)."""
        assert mode in ("smart", "fast", "immediate"), mode
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
                  timeout=timeout + 10)

    def running(self) -> bool:
        out = subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "status"), capture_output=True, timeout=30)
        return out.returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivatePostgres":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # --- databases -------------------------------------------------------------------
    @property
    def dsn(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": self.user}

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(dbname=dbname, connect_timeout=5, **self.dsn)

    def execute(self, sql: str, dbname: str = "postgres", params=()) -> list[tuple]:
        conn = self.connect(dbname)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str, migrate_role: str | None = None) -> str:
        """Create `name`; with migrate_role ("region" or "router"), apply that
        role's migrations to it. Returns its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        if migrate_role:
            self.migrate(name, role=migrate_role)
        return self.url(name)

    def migrate(self, name: str, role: str = "region") -> None:
        env = {**{k: v for k, v in os.environ.items() if k != "EXTRA_APPS"}, "DATABASE_URL": self.url(name),
               "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": role}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
