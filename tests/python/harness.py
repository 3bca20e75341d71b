"""The server process and a JSON WebSocket client for the integration tests.

Written against docs/PROTOCOL.md only. Every wait is bounded: server start and
stop by `START_TIMEOUT` and `STOP_TIMEOUT`, each expected message by `WAIT`.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT = 15.0  # seconds until the `listening` line and a 200 from /healthz
STOP_TIMEOUT = 10.0  # seconds for the process to exit after SIGTERM
WAIT = 10.0  # seconds for one expected message (generous: CI may be loaded)
QUIET = 0.5  # seconds of silence that count as "nothing more arrives"
HTTP_TIMEOUT = 5.0

# Messages outside every conversation's stream (best effort, never replayed):
# skipped while waiting for something else.
NOISE = ("receipt", "typing", "presence")

LISTENING = re.compile(r"listening addr=127\.0\.0\.1:(\d+)\b")


def binary_path() -> Path:
    env = os.environ.get("SWITCHBOARD_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "switchboard"


def _die_with_parent() -> None:
    """In the child: SIGKILL it if the test process dies, so no server outlives pytest."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # not Linux or no prctl: teardown still stops it
        pass


class Server:
    """One `switchboard --dev` process on a loopback port picked by the kernel."""

    def __init__(self, data_dir: Path, shards: int, durability: str | None = None):
        self.data_dir = data_dir
        self.shards = shards
        self.durability = durability
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=500)  # for failure messages
        self.starts = 0
        self._lock = threading.Lock()

    # -- process ---------------------------------------------------------------

    def start(self) -> None:
        assert self.proc is None, "server already running"
        binary = binary_path()
        assert binary.is_file(), (
            f"no switchboard binary at {binary}; build it with "
            "`cargo build --release --locked -p engine --bin switchboard` or set SWITCHBOARD_BIN"
        )
        args = [
            str(binary),
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(self.data_dir),
            "--shards",
            str(self.shards),
        ]
        if self.durability:
            args += ["--durability", self.durability]
        # Only the flags above configure it: no SWITCHBOARD_* settings leak in from outside.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(NO_COLOR="1", SWITCHBOARD_LOG="info,fjall=warn,lsm_tree=warn")
        self.starts += 1
        self.port = None
        found = threading.Event()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self.proc = proc
        run = self.starts
        log = open(self.log_path, "a", encoding="utf-8")
        log.write(f"--- start {run}: {' '.join(args)}\n")
        log.flush()

        def drain() -> None:
            # Reads stderr to its end so the server never blocks on a full pipe.
            assert proc.stderr is not None
            with log:
                for raw in proc.stderr:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    log.write(line + "\n")
                    log.flush()
                    with self._lock:
                        self.lines.append(f"[{run}] {line}")
                    if not found.is_set():
                        m = LISTENING.search(line)
                        if m:
                            self.port = int(m.group(1))
                            found.set()
                found.set()  # EOF: the process is gone

        threading.Thread(target=drain, name=f"switchboard-stderr-{run}", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        if not found.wait(START_TIMEOUT) or self.port is None:
            self._abort()
            raise AssertionError(f"switchboard did not log `listening addr=`:\n{self.log_tail()}")
        while True:
            try:
                status, _ = self.http("GET", "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                self._abort()
                raise AssertionError(f"no 200 from /healthz on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.05)

    def _abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL and raise if it hangs)."""
        proc = self.proc
        assert proc is not None, "server not running"
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(
                f"switchboard still running {STOP_TIMEOUT:.0f} s after SIGTERM:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL, as in a crash, and reap."""
        proc = self.proc
        assert proc is not None, "server not running"
        self.proc = None
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)

    @property
    def running(self) -> bool:
        return self.proc is not None

    def log_tail(self, n: int = 40) -> str:
        with self._lock:
            tail = list(self.lines)[-n:]
        return "\n".join(tail) if tail else "(no server output)"

    # -- HTTP ------------------------------------------------------------------

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method
        )
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def token(self, user: int, device: int) -> str:
        body = json.dumps({"user": str(user), "device": str(device)}).encode()
        status, reply = self.http("POST", "/v1/dev/token", body)
        assert status == 200, f"POST /v1/dev/token {body!r}: HTTP {status} {reply!r}"
        doc = json.loads(reply)
        assert doc.get("user") == str(user) and doc.get("device") == str(device), doc
        assert isinstance(doc.get("token"), str) and doc["token"], doc
        return doc["token"]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class ProtocolError(AssertionError):
    pass


class Client:
    """One WebSocket connection of (user, device), JSON encoding."""

    def __init__(self, ws: ClientConnection, user: int, device: int, name: str):
        self.ws = ws
        self.user = str(user)
        self.device = str(device)
        self.name = name
        self.welcome: dict[str, Any] = {}
        self.noise: list[tuple[str, dict]] = []
        self._rid = 0

    def __repr__(self) -> str:
        return f"<{self.name} user={self.user} device={self.device}>"

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def recv(self, timeout: float = WAIT, what: str = "a message") -> tuple[str, dict]:
        """The next message that is not noise, as (type, fields)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise ProtocolError(f"{self}: waited {timeout} s for {what}, got nothing")
            try:
                frame = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                raise ProtocolError(f"{self}: waited {timeout} s for {what}, got nothing") from None
            assert isinstance(frame, str), f"{self}: a binary frame on a JSON connection: {frame!r}"
            doc = json.loads(frame)
            assert isinstance(doc, dict) and len(doc) == 1, f"{self}: not a one-key object: {frame}"
            ((kind, fields),) = doc.items()
            assert isinstance(fields, dict), f"{self}: fields not an object: {frame}"
            if kind in NOISE:
                self.noise.append((kind, fields))
                continue
            return kind, fields

    async def expect(self, kind: str, what: str | None = None, timeout: float = WAIT) -> dict:
        what = what or f"`{kind}`"
        got, fields = await self.recv(timeout, what)
        if got != kind:
            raise ProtocolError(f"{self}: expected {what}, got {{{got!r}: {fields}}}")
        return fields

    async def expect_quiet(self, duration: float = QUIET, what: str = "nothing") -> None:
        """Fails if any non-noise message arrives within `duration`."""
        try:
            kind, fields = await self.recv(duration)
        except ProtocolError:
            return
        raise ProtocolError(f"{self}: expected {what} within {duration} s, got {{{kind!r}: {fields}}}")

    # -- requests --------------------------------------------------------------

    async def sync(self, since: list[dict] | None = None) -> tuple[list[dict], dict]:
        """`sync`; returns the `msg`s before `synced`, and `synced`."""
        rid = self.rid()
        await self.send({"sync": {"rid": rid, "since": since or []}})
        msgs = []
        while True:
            kind, fields = await self.recv(what=f"`msg` or `synced` (sync rid {rid})")
            if kind == "msg":
                msgs.append(fields)
            elif kind == "synced":
                assert fields.get("rid") == rid, f"{self}: synced for rid {fields.get('rid')}, sent {rid}"
                assert isinstance(fields.get("convs"), list), f"{self}: synced without convs: {fields}"
                return msgs, fields
            else:
                raise ProtocolError(f"{self}: during sync rid {rid}: unexpected {{{kind!r}: {fields}}}")

    async def direct_open(self, user: int) -> str:
        rid = self.rid()
        await self.send({"direct_open": {"rid": rid, "user": str(user)}})
        reply = await self.expect("conv", f"`conv` for direct_open rid {rid}")
        assert reply.get("rid") == rid, f"{self}: conv reply rid {reply.get('rid')}, sent {rid}: {reply}"
        conv = reply.get("conv")
        assert isinstance(conv, dict), f"{self}: conv reply without a conv object: {reply}"
        conv_id = conv.get("conv")
        assert isinstance(conv_id, str) and conv_id.isdigit(), f"conv id not a decimal string: {reply}"
        assert int(conv_id) < 2**63, f"a direct conv id has the top bit set: {conv_id}"
        assert conv.get("kind") == "direct", f"direct_open gave kind {conv.get('kind')!r}: {reply}"
        return conv_id

    async def send_text(self, conv: str, cmid: int | str, body: str) -> None:
        await self.send({"send": {"conv": conv, "cmid": str(cmid), "body": body}})

    async def send_acked(self, conv: str, cmid: int | str, body: str) -> dict:
        """`send` and wait for its `ack` (fails on `error` or anything else)."""
        await self.send_text(conv, cmid, body)
        ack = await self.expect("ack", f"`ack` for cmid {cmid}")
        assert ack.get("cmid") == str(cmid), f"{self}: ack for cmid {ack.get('cmid')}, sent {cmid}: {ack}"
        assert ack.get("conv") == conv, f"{self}: ack conv {ack.get('conv')}, sent to {conv}: {ack}"
        assert isinstance(ack.get("seq"), int), f"ack seq not a number: {ack}"
        assert isinstance(ack.get("id"), str) and ack["id"].isdigit(), f"ack id not a decimal string: {ack}"
        assert isinstance(ack.get("ts"), int), f"ack ts not a number: {ack}"
        return ack

    async def fetch(self, conv: str, page: Any, limit: int) -> dict:
        rid = self.rid()
        await self.send({"fetch": {"rid": rid, "conv": conv, "from": page, "limit": limit}})
        reply = await self.expect("history", f"`history` for fetch rid {rid} from {page}")
        assert reply.get("rid") == rid, f"{self}: history rid {reply.get('rid')}, sent {rid}: {reply}"
        assert reply.get("conv") == conv, f"{self}: history conv {reply.get('conv')}: {reply}"
        assert isinstance(reply.get("msgs"), list), f"history without msgs: {reply}"
        assert isinstance(reply.get("more"), bool), f"history without a bool more: {reply}"
        return reply

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), WAIT)


async def open_ws(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    return await asyncio.wait_for(
        connect(
            url,
            additional_headers=headers,
            open_timeout=WAIT,
            close_timeout=2,
            max_size=2**24,  # SERVER_MESSAGE_BYTES_MAX
        ),
        WAIT + 1,
    )


async def connect_client(
    server: Server,
    user: int,
    device: int = 1,
    *,
    name: str | None = None,
    token: str | None = None,
    query: bool = False,
    sync: bool = True,
) -> Client:
    """Connects as (user, device), checks `welcome`, and by default `sync`s.

    The token goes in the Authorization header, or with `query` in `?token=`.
    """
    if token is None:
        token = await asyncio.to_thread(server.token, user, device)
    if query:
        ws = await open_ws(f"{server.ws_url}?token={token}")
    else:
        ws = await open_ws(server.ws_url, {"Authorization": f"Bearer {token}"})
    client = Client(ws, user, device, name or f"user{user}/dev{device}")
    try:
        welcome = await client.expect("welcome", "`welcome` as the first message")
        assert welcome.get("user") == str(user), f"{client}: welcome for the wrong user: {welcome}"
        assert welcome.get("device") == str(device), f"{client}: welcome for the wrong device: {welcome}"
        assert welcome.get("version") == 1, f"{client}: welcome version: {welcome}"
        assert isinstance(welcome.get("time"), int), f"{client}: welcome time: {welcome}"
        client.welcome = welcome
        if sync:
            await client.sync()
    except BaseException:
        await ws.close()
        raise
    return client


async def expect_quiet_all(clients: list[Client], duration: float = QUIET, what: str = "nothing") -> None:
    """`expect_quiet` on each client at once; fails if any got a message."""
    results = await asyncio.gather(
        *(c.expect_quiet(duration, what) for c in clients), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise ProtocolError("\n".join(str(e) for e in errors))


def text_of(msg: dict) -> str | None:
    content = msg.get("content")
    if isinstance(content, dict):
        return content.get("text")
    return None


def seqs(msgs: list[dict]) -> list[int]:
    return [m.get("seq") for m in msgs]


def conv_summary(synced: dict, conv: str) -> dict:
    found = [c for c in synced["convs"] if c.get("conv") == conv]
    assert len(found) == 1, f"synced should list conv {conv} once: {synced}"
    return found[0]


def run(coro, timeout: float = 60.0):
    """Runs one test's coroutine with an overall deadline."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Clients:
    """Opens clients of one server and closes them all on exit, whatever happened."""

    def __init__(self, server: Server):
        self.server = server
        self.all: list[Client] = []

    async def connect(self, user: int, device: int = 1, **kwargs) -> Client:
        client = await connect_client(self.server, user, device, **kwargs)
        self.all.append(client)
        return client

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc) -> None:
        # Concurrently: each close waits at most close_timeout for the server.
        await asyncio.gather(*(client.close() for client in self.all), return_exceptions=True)


# The users of every scenario.
ALICE, BOB, CAROL = 1, 2, 3
