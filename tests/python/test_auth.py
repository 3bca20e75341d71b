"""The upgrade needs a valid token, in the Authorization header or the `token` query."""

import base64
import hashlib
import hmac
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from harness import ALICE, Clients, ProtocolError, open_ws, run


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, secret: bytes) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def with_subject(token: str, user: str) -> str:
    """The same token with another `sub`, keeping the old signature."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = user
    return f"{head}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{sig}"


async def refused(server, path: str = "", headers: dict | None = None) -> int:
    try:
        ws = await open_ws(server.ws_url + path, headers)
    except InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    raise ProtocolError(f"the upgrade of /ws{path} with headers {headers} was accepted, want 401")


def test_upgrade_without_a_valid_token_is_refused(server):
    async def scenario():
        now = int(time.time())
        good = server.token(ALICE, 1)
        cases = {
            "no token": ("", None),
            "garbage header": ("", {"Authorization": "Bearer garbage"}),
            "garbage query": ("?token=garbage", None),
            "empty bearer": ("", {"Authorization": "Bearer "}),
            "signed with another secret": (
                "",
                {"Authorization": "Bearer " + jwt(
                    {"sub": "1", "dev": "1", "iat": now, "exp": now + 3600},
                    b"not the server's secret, 32 bytes or more",
                )},
            ),
            "claims changed after signing": ("", {"Authorization": f"Bearer {with_subject(good, '2')}"}),
            "header wins over a valid query": (f"?token={good}", {"Authorization": "Bearer garbage"}),
        }
        statuses = {name: await refused(server, path, headers) for name, (path, headers) in cases.items()}
        wrong = {name: s for name, s in statuses.items() if s != 401}
        assert not wrong, f"want HTTP 401 for each, got {wrong}"

    run(scenario())


def test_valid_token_in_query_or_header_is_accepted(server):
    async def scenario():
        async with Clients(server) as c:
            # connect() checks welcome names the token's user and device, then syncs.
            await c.connect(ALICE, 3, query=True, name="alice/3 (query token)")
            await c.connect(ALICE, 4, name="alice/4 (header token)")
            token = server.token(ALICE, 5)
            ws = await open_ws(f"{server.ws_url}?token=garbage", {"Authorization": f"Bearer {token}"})
            try:
                frame = json.loads(await ws.recv())
                assert "welcome" in frame, f"a valid header with a garbage query should be welcomed: {frame}"
                assert frame["welcome"].get("device") == "5", frame
            finally:
                await ws.close()

    run(scenario())


@pytest.mark.parametrize("encoding", ["json", "bogus"])
def test_encoding_query(server, encoding):
    """`encoding=json` gives JSON frames; an unknown encoding is refused with 400."""

    async def scenario():
        token = server.token(ALICE, 1)
        url = f"{server.ws_url}?encoding={encoding}&token={token}"
        if encoding == "bogus":
            try:
                ws = await open_ws(url)
            except InvalidStatus as e:
                assert e.response.status_code == 400, f"encoding=bogus: HTTP {e.response.status_code}"
                return
            await ws.close()
            raise ProtocolError("encoding=bogus was accepted, want 400")
        ws = await open_ws(url)
        try:
            frame = await ws.recv()
            assert isinstance(frame, str), f"encoding=json should give text frames: {frame!r}"
            assert "welcome" in json.loads(frame), frame
        finally:
            await ws.close()

    run(scenario())
