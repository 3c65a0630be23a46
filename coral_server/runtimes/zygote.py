"""A fork server for local Python agents: the MCP SDK is imported once, not once per agent.

Importing the official MCP SDK costs about a CPU-second per process, so 20 Python agents started at
once on two cores spend ~10 s importing it. The zygote is a plain single-threaded process
(`python -m coral_server.runtimes.zygote FD`) that imports the SDK and the agent helper library,
then forks one child per launch. The child starts its own session (so its process group is its
pid, as a directly started agent's is), takes the output pipes passed with the request as its
stdout and stderr, the agent's working directory, environment and argv, and runs the script as
`__main__`, like `python script.py` would. The zygote reports each child's exit status.

Wire format, over a SOCK_SEQPACKET socket pair (one message per datagram, JSON):
- server -> zygote: {"id", "argv", "cwd", "env"} with the stdout and stderr write ends attached;
- zygote -> server: {"ready": true} once, {"id", "pid"} or {"id", "error"}, {"pid", "exit"}.

If the server goes away, the zygote kills its children's process groups and exits. If the zygote
dies, the server still notices its children's exits (via pidfds, without exit codes) and starts a
new zygote for the next launch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

log = logging.getLogger("coral_server.runtimes.zygote")

MAX_MESSAGE = 1024 * 1024
# What the zygote imports before forking: the SDK client and the helper library agents use.
PRELOAD = ("mcp", "mcp.client.streamable_http", "mcp.client.sse", "coral_server.agent")


class ZygoteUnavailable(Exception):
    """The zygote could not be started or stopped answering: launch the usual way."""


# -- server side ---------------------------------------------------------------------------------


class Zygote:
    """The server's end: starts the zygote on first use (or `start()`), spawns, reports exits."""

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._next_id = 0
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._closed = False

    async def start(self) -> None:
        """Start the zygote (if not running) and wait until it has imported what it preloads."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._closed:
                raise ZygoteUnavailable("the server is shutting down")
            if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
                await self._spawn_zygote()
            assert self._ready is not None
        await asyncio.shield(self._ready)

    async def _spawn_zygote(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "coral_server.runtimes.zygote",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ZygoteUnavailable(f"cannot start the zygote: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read(ours, self._ready), name="coral-zygote-reader")

    async def _read(self, sock: socket.socket, ready: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(sock, MAX_MESSAGE)
                if not data:
                    break
                message = json.loads(data)
                if message.get("ready"):
                    ready.set_result(None)
                elif "exit" in message:
                    self._exit(int(message["pid"]), int(message["exit"]))
                elif (spawned := self._spawns.pop(int(message["id"]), None)) is not None:
                    if "pid" in message:
                        spawned.set_result(int(message["pid"]))
                    else:
                        spawned.set_exception(ZygoteUnavailable(str(message.get("error"))))
        except (OSError, ValueError) as exc:
            log.warning("zygote.read_failed error=%r", exc)
        finally:
            self._lost(sock, ready)

    def _exit(self, pid: int, code: int) -> None:
        exited = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        if not exited.done():
            exited.set_result(code)

    def _lost(self, sock: socket.socket, ready: asyncio.Future[None]) -> None:
        """The zygote is gone: fail what waits on it; watch its orphaned children by pidfd."""
        if not ready.done():
            ready.set_exception(ZygoteUnavailable("the zygote exited before it was ready"))
            ready.exception()  # retrieved: nobody may be waiting
        for spawned in self._spawns.values():
            if not spawned.done():
                spawned.set_exception(ZygoteUnavailable("the zygote exited"))
        self._spawns.clear()
        for pid, exited in self._exits.items():
            if not exited.done():
                _watch_pidfd(pid, exited)
        if self._sock is sock:
            self._sock = None
        sock.close()

    async def spawn(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], out: int, err: int) -> int:
        """Fork a child running `argv` (interpreter, script, args...) with `out`/`err` as stdio."""
        await self.start()
        sock = self._sock
        if sock is None:
            raise ZygoteUnavailable("the zygote exited")
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        spawned: asyncio.Future[int] = loop.create_future()
        self._spawns[request_id] = spawned
        payload = json.dumps({"id": request_id, "argv": list(argv), "cwd": cwd, "env": dict(env)})
        try:
            await _send_with_fds(sock, payload.encode(), [out, err])
        except OSError as exc:
            self._spawns.pop(request_id, None)
            raise ZygoteUnavailable(f"the zygote did not take the request: {exc}") from exc
        pid = await spawned
        self._exits.setdefault(pid, loop.create_future())
        return pid

    async def wait(self, pid: int) -> int:
        """The exit code of a spawned child (negative: killed by that signal; -1: unknown)."""
        exited = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.shield(exited)
        finally:
            if exited.done():
                self._exits.pop(pid, None)

    async def close(self) -> None:
        """Stop the zygote (its children are the sessions' to stop first)."""
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._proc is not None and self._proc.returncode is None:
            try:
                async with asyncio.timeout(5):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()


async def _send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(sock, [data], fds)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), _settle, writable)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _watch_pidfd(pid: int, exited: asyncio.Future[int]) -> None:
    """Resolve `exited` with -1 once a process that is not our child has gone."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone (or no pidfds here)
        exited.set_result(-1)
        return

    def gone() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not exited.done():
            exited.set_result(-1)

    loop.add_reader(fd, gone)


# -- zygote side (a separate process; blocking, single-threaded) ---------------------------------


def main(fd: int) -> NoReturn:
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    for name in PRELOAD:
        __import__(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    _reply(sock, {"ready": True})
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(sock, children)
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 2)
            except OSError:
                data, fds = b"", []
            if not data:  # the server is gone: so are its agents (reaped, so none lingers as a zombie)
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.waitpid(pid, 0)
                os._exit(0)
            request = json.loads(data)
            try:
                pid = os.fork()
            except OSError as exc:
                _reply(sock, {"id": request["id"], "error": f"fork failed: {exc}"})
                pid = -1
            if pid == 0:
                selector.close()
                _child(request, fds, [sock.fileno(), wake_r, wake_w])
            for extra in fds:
                os.close(extra)
            if pid > 0:
                children.add(pid)
                _reply(sock, {"id": request["id"], "pid": pid})
                _reap(sock, children)  # a child that ended at once: its exit follows its pid


def _reply(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _reap(sock: socket.socket, children: set[int]) -> None:
    """Report every child that has ended (the zygote has no other children)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        with contextlib.suppress(OSError):
            _reply(sock, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def _child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> NoReturn:
    """In the forked child: become the agent, run its script, exit with its status."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            if fd > 2:
                os.close(fd)
        env: dict[str, str] = request["env"]
        os.environ.clear()
        os.environ.update(env)
        unbuffered = bool(env.get("PYTHONUNBUFFERED"))
        sys.stdout = _text_stream(1, unbuffered, sys.stdout)
        sys.stderr = _text_stream(2, True, sys.stderr)
        os.chdir(request["cwd"])
        argv: list[str] = request["argv"]
        script = os.path.abspath(argv[1])
        sys.argv = [argv[1], *argv[2:]]
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:1] = [os.path.dirname(script), *extra]
        _run_main(script)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        code = _shutdown(code)
    os._exit(code)


def _run_main(script: str) -> None:
    """Run a script as `__main__`, as `python script.py` does (absolute `__file__`, argv as given)."""
    import builtins
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    with open(script, "rb") as source:
        code = compile(source.read(), script, "exec")
    exec(code, main.__dict__)


def _text_stream(fd: int, unbuffered: bool, like: Any) -> Any:
    import io

    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    if unbuffered:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(raw, encoding=encoding, errors=errors, write_through=True)  # type: ignore[type-var]
    return open(fd, "w", encoding=encoding, errors=errors, closefd=False)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _shutdown(code: int) -> int:
    """What a normal interpreter exit does: join non-daemon threads, run atexit, flush output."""
    import atexit
    import threading

    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 120
    return code


if __name__ == "__main__":
    main(int(sys.argv[1]))
