"""Resending a `send` with the same cmid gets the original ack and stores nothing new."""

from harness import ALICE, BOB, Clients, conv_summary, run, seqs, text_of


def test_resend_with_same_cmid_is_stored_once(server):
    run(dedupe(server))


async def dedupe(server):
    async with Clients(server) as c:
        alice = await c.connect(ALICE, 1, name="alice")
        conv = await alice.direct_open(BOB)
        bob = await c.connect(BOB, 1, name="bob")

        cmid = "777"
        body = "only once"
        first = await alice.send_acked(conv, cmid, body)
        assert first["seq"] == 1, first
        msg = await bob.expect("msg", "the msg of the first send")
        assert (msg.get("seq"), msg.get("id")) == (1, first["id"]), msg

        again = await alice.send_acked(conv, cmid, body)
        assert (again["seq"], again["id"]) == (first["seq"], first["id"]), (
            f"a resend on the same connection should get the original ack: {first} then {again}"
        )
        assert again["ts"] == first["ts"], f"the original ack's ts: {first} then {again}"

        # Reconnect the same device (as after a lost connection) and resend.
        await alice.close()
        alice2 = await c.connect(ALICE, 1, name="alice (reconnected)")
        third = await alice2.send_acked(conv, cmid, body)
        assert (third["seq"], third["id"]) == (first["seq"], first["id"]), (
            f"a resend after reconnecting should get the original ack: {first} then {third}"
        )

        await bob.expect_quiet(what="no second msg for a resent cmid")
        await alice2.expect_quiet(what="nothing after the ack")
        await bob.close()

        fresh = await c.connect(BOB, 1, name="bob (fresh)", sync=False)
        msgs, synced = await fresh.sync()
        assert seqs(msgs) == [1], f"sync should show the message once: {msgs}"
        assert (msgs[0].get("id"), text_of(msgs[0])) == (first["id"], body), msgs
        assert conv_summary(synced, conv).get("last_seq") == 1, synced

        # Nothing was stored for the resends: the next new cmid gets seq 2.
        nxt = await alice2.send_acked(conv, "778", "a new one")
        assert nxt["seq"] == 2, f"after resends the next message should be seq 2: {nxt}"
        msg = await fresh.expect("msg", "the live msg of the new cmid")
        assert (msg.get("seq"), msg.get("id")) == (2, nxt["id"]), msg
