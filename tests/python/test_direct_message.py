"""1:1: a send is acked to the sender and delivered live to the other member."""

from harness import ALICE, BOB, Clients, run


def test_direct_send_is_acked_and_delivered_live(server):
    run(direct_send(server))


async def direct_send(server):
    async with Clients(server) as c:
        alice = await c.connect(ALICE, 1, name="alice")
        conv = await alice.direct_open(BOB)
        bob = await c.connect(BOB, 1, name="bob")
        assert await bob.direct_open(ALICE) == conv, "a direct conv id must be the same from both sides"

        body = "hello bob 👋"
        cmid = "8410392744587711845"
        ack = await alice.send_acked(conv, cmid, body)
        assert ack["seq"] == 1, f"the first message of a new conv should be seq 1: {ack}"

        msg = await bob.expect("msg", "the live `msg` of alice's send")
        assert msg.get("conv") == conv, f"msg conv: {msg}"
        assert msg.get("seq") == ack["seq"], f"msg seq {msg.get('seq')} != ack seq {ack['seq']}"
        assert msg.get("id") == ack["id"], f"msg id {msg.get('id')} != ack id {ack['id']}"
        assert msg.get("content") == {"text": body}, f"msg content: {msg}"
        assert msg.get("from") == str(ALICE), f"msg from: {msg}"
        assert msg.get("device") == "1", f"msg device: {msg}"
        assert msg.get("ts") == ack["ts"], f"msg ts {msg.get('ts')} != ack ts {ack['ts']}"

        await alice.expect_quiet(what="nothing after the ack (no msg of its own send)")
        await bob.expect_quiet(what="the msg only once")
