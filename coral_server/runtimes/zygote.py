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

Neither side ever blocks on the other: the server sends one request at a time and waits for the
socket to drain without blocking its loop; the zygote queues its replies while the server is slow to
read them. A launch that gets no pid within `spawn_timeout_s` fails (the caller starts the agent
the usual way); a pid that arrives for a launch that was cancelled or timed out has its process
group killed at once.

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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

log = logging.getLogger("coral_server.runtimes.zygote")

MAX_MESSAGE = 1024 * 1024
# What the zygote imports before forking: the SDK client and the helper library agents use.
PRELOAD = ("mcp", "mcp.client.streamable_http", "mcp.client.sse", "coral_server.agent")
# How long a launch may wait for the zygote (start-up included) before it is given up.
SPAWN_TIMEOUT_S = 30.0


class ZygoteUnavailable(Exception):
    """The zygote could not be started or stopped answering: launch the usual way."""


# -- server side ---------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Link:
    """One zygote process and the server's end of its socket."""

    proc: asyncio.subprocess.Process
    sock: socket.socket
    ready: asyncio.Future[None]
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request on the wire at a time
    writable: asyncio.Future[None] | None = None  # what the sender waits on while the socket is full
    spawns: dict[int, asyncio.Future[int]] = field(default_factory=dict)  # request id -> pid
    children: set[int] = field(default_factory=set)  # forked, exit not reported yet
    reader: asyncio.Task[None] | None = None
    lost: bool = False


class Zygote:
    """The server's end: starts the zygote on first use (or `start()`), spawns, reports exits."""

    def __init__(self, python: str = sys.executable, spawn_timeout_s: float = SPAWN_TIMEOUT_S) -> None:
        self._python = python
        self._spawn_timeout_s = spawn_timeout_s
        self._link: _Link | None = None
        self._starting: asyncio.Lock | None = None
        self._next_id = 0
        # Exit codes of every child spawned and not yet waited for, across zygote generations.
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running zygote's pid (None before the first start or after it was lost)."""
        link = self._link
        return None if link is None or link.lost else link.proc.pid

    async def start(self) -> None:
        """Start the zygote (if not running) and wait until it has imported what it preloads."""
        await self._running()

    async def _running(self) -> _Link:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._closed:
                raise ZygoteUnavailable("the server is shutting down")
            link = self._link
            if link is None or link.lost:
                link = self._link = await self._spawn_zygote()
        await asyncio.shield(link.ready)
        return link

    async def _spawn_zygote(self) -> _Link:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
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
        link = _Link(proc, ours, loop.create_future())
        link.reader = asyncio.create_task(self._read(link), name="coral-zygote-reader")
        log.info("zygote.started pid=%s", proc.pid)
        return link

    async def spawn(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], out: int, err: int) -> int:
        """Fork a child running `argv` (interpreter, script, args...) with `out`/`err` as stdio.

        Raises `ZygoteUnavailable` when the zygote cannot serve the launch within the spawn timeout.
        Cancelled (or timed out) after the request went out, the child is killed when its pid comes.
        """
        request = {"argv": list(argv), "cwd": cwd, "env": dict(env)}
        try:
            async with asyncio.timeout(self._spawn_timeout_s):
                link = await self._running()
                return await self._request(link, request, [out, err])
        except TimeoutError:
            raise ZygoteUnavailable(f"no answer from the zygote within {self._spawn_timeout_s:g} s") from None

    async def _request(self, link: _Link, request: dict[str, Any], fds: list[int]) -> int:
        self._next_id += 1
        request_id = self._next_id
        payload = json.dumps({"id": request_id, **request}).encode()
        spawned: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        link.spawns[request_id] = spawned
        try:
            async with link.sending:
                await self._send(link, payload, fds)
        except BaseException as exc:
            # Not sent (a datagram goes whole or not at all), so nothing was forked.
            link.spawns.pop(request_id, None)
            if isinstance(exc, OSError):
                raise ZygoteUnavailable(f"the zygote did not take the request: {exc}") from exc
            raise
        try:
            return await spawned
        except asyncio.CancelledError:
            # Sent: the reader kills a pid that comes later; one that came already is killed here.
            if spawned.done() and not spawned.cancelled() and spawned.exception() is None:
                self._abandon(spawned.result())
            raise

    async def _send(self, link: _Link, payload: bytes, fds: list[int]) -> None:
        """Send one request, waiting (without blocking the loop) while the socket is full.

        Only the holder of `link.sending` calls this, so there is one writer callback at a time.
        """
        loop = asyncio.get_running_loop()
        fd = link.sock.fileno()
        while True:
            if link.lost:
                raise ZygoteUnavailable("the zygote exited")
            try:
                socket.send_fds(link.sock, [payload], fds)
                return
            except BlockingIOError:
                pass
            link.writable = loop.create_future()
            loop.add_writer(fd, _settle, link.writable)
            try:
                await link.writable
            finally:
                link.writable = None
                if not link.lost:  # else `_lost` removed it before closing the socket
                    loop.remove_writer(fd)

    async def _read(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(link.sock, MAX_MESSAGE)
                if not data:
                    break
                self._dispatch(link, json.loads(data))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("zygote.read_failed pid=%s error=%r", link.proc.pid, exc)
        finally:
            self._lost(link)

    def _dispatch(self, link: _Link, message: dict[str, Any]) -> None:
        if message.get("ready"):
            _settle(link.ready)
        elif "exit" in message:
            pid = int(message["pid"])
            link.children.discard(pid)
            exited = self._exits.get(pid)
            if exited is not None and not exited.done():
                exited.set_result(int(message["exit"]))
        elif (spawned := link.spawns.pop(int(message["id"]), None)) is not None:
            if "pid" not in message:
                if not spawned.done():
                    spawned.set_exception(ZygoteUnavailable(str(message.get("error"))))
                return
            pid = int(message["pid"])
            if spawned.done():  # the launch was cancelled or timed out: nobody will watch this child
                _kill_group(pid)
                log.info("zygote.abandoned pid=%s", pid)
                return
            link.children.add(pid)
            self._exits[pid] = asyncio.get_running_loop().create_future()
            spawned.set_result(pid)

    def _abandon(self, pid: int) -> None:
        """Kill a child whose launch was cancelled after its pid arrived, unless it has ended."""
        exited = self._exits.pop(pid, None)
        if exited is not None and not exited.done():
            _kill_group(pid)
            log.info("zygote.abandoned pid=%s", pid)

    def _lost(self, link: _Link) -> None:
        """The zygote is gone: fail what waits on it; watch its orphaned children by pidfd."""
        link.lost = True
        if not self._closed:
            log.warning("zygote.lost pid=%s (the next launch starts a new one)", link.proc.pid)
        if not link.ready.done():
            link.ready.set_exception(ZygoteUnavailable("the zygote exited before it was ready"))
            link.ready.exception()  # retrieved: nobody may be waiting
        for spawned in link.spawns.values():
            if not spawned.done():
                spawned.set_exception(ZygoteUnavailable("the zygote exited"))
        link.spawns.clear()
        for pid in link.children:
            exited = self._exits.get(pid)
            if exited is not None and not exited.done():
                _watch_pidfd(pid, exited)
        link.children.clear()
        if link.writable is not None:
            asyncio.get_running_loop().remove_writer(link.sock.fileno())
            _settle(link.writable)
        link.sock.close()

    async def wait(self, pid: int) -> int:
        """The exit code of a spawned child (negative: killed by that signal; -1: unknown)."""
        exited = self._exits.get(pid)
        if exited is None:
            return -1
        try:
            return await asyncio.shield(exited)
        finally:
            if exited.done():
                self._exits.pop(pid, None)

    async def close(self) -> None:
        """Stop the zygote (its children are the sessions' to stop first)."""
        self._closed = True
        if self._starting is not None:
            async with self._starting:  # a zygote being started is stopped too
                pass
        link = self._link
        if link is None:
            return
        if not link.lost:
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_RDWR)
        if link.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await link.reader
        if link.proc.returncode is None:
            try:
                async with asyncio.timeout(5):
                    await link.proc.wait()
            except TimeoutError:
                link.proc.kill()
                await link.proc.wait()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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


# -- zygote side (a separate process; single-threaded, never blocks on the server) ----------------


class _ServerGone(Exception):
    """The server closed its end (or it broke): its agents go, and so does the zygote."""


class _Outbox:
    """Replies to the server, sent as the socket takes them: a slow reader never blocks the zygote."""

    def __init__(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        self._sock = sock
        self._selector = selector
        self._queue: deque[bytes] = deque()

    def put(self, message: dict[str, Any]) -> None:
        self._queue.append(json.dumps(message).encode())
        self.flush()

    def flush(self) -> None:
        while self._queue:
            try:
                self._sock.send(self._queue[0])
            except BlockingIOError:
                break
            except OSError as exc:
                raise _ServerGone from exc
            self._queue.popleft()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._queue else 0)
        if self._selector.get_key(self._sock).events != events:
            self._selector.modify(self._sock, events, "server")


def main(fd: int) -> NoReturn:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    for name in PRELOAD:
        __import__(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "server")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    outbox = _Outbox(sock, selector)
    try:
        outbox.put({"ready": True})
        while True:
            for key, events in selector.select():
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    _reap(outbox, children)
                    continue
                if events & selectors.EVENT_WRITE:
                    outbox.flush()
                if events & selectors.EVENT_READ:
                    _serve(sock, outbox, children, selector, [sock.fileno(), wake_r, wake_w])
    except _ServerGone:
        pass
    # The server is gone: so are its agents (reaped, so none lingers as a zombie).
    for pid in children:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)
    os._exit(0)


def _serve(
    sock: socket.socket,
    outbox: _Outbox,
    children: set[int],
    selector: selectors.BaseSelector,
    inherited: list[int],
) -> None:
    """Take one request from the server and fork its child."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 2)
    except BlockingIOError:
        return
    except OSError as exc:
        raise _ServerGone from exc
    if not data:
        raise _ServerGone
    request = json.loads(data)
    # The child closes its end of `leading` once it leads its own process group: only then is its
    # pid news, so that killing the group (a stop, a cancelled launch) always reaches it.
    leading, led = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        outbox.put({"id": request["id"], "error": f"fork failed: {exc}"})
        pid = -1
    if pid == 0:
        selector.close()
        os.close(leading)
        _child(request, fds, inherited, led)
    os.close(led)
    if pid > 0:
        os.read(leading, 1)  # EOF: the child has called setsid() (or died); it is next to do so
    os.close(leading)
    for extra in fds:
        os.close(extra)
    if pid > 0:
        children.add(pid)
        outbox.put({"id": request["id"], "pid": pid})
        _reap(outbox, children)  # a child that ended at once: its exit follows its pid


def _reap(outbox: _Outbox, children: set[int]) -> None:
    """Report every child that has ended (the zygote has no other children)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        outbox.put({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def _child(request: dict[str, Any], fds: list[int], inherited: list[int], led: int) -> NoReturn:
    """In the forked child: become the agent, run its script, exit with its status.

    `led` is closed once the child leads its own session and process group (the zygote waits for it).
    """
    code = 1
    try:
        os.setsid()
        os.close(led)
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
