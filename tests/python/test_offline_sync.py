"""Offline delivery: a device that was away gets what it missed in `sync`, then live."""

from harness import ALICE, BOB, Clients, conv_summary, run, seqs, text_of

COUNT = 100


def test_offline_device_syncs_all_missed_messages_in_order(server):
    run(offline_sync(server))


async def offline_sync(server):
    async with Clients(server) as c:
        alice = await c.connect(ALICE, 1, name="alice")
        conv = await alice.direct_open(BOB)
        acks = []
        for i in range(1, COUNT + 1):
            ack = await alice.send_acked(conv, 1000 + i, f"message {i}")
            assert ack["seq"] == i, f"send {i} acked with seq {ack['seq']}: {ack}"
            acks.append(ack)

        bob = await c.connect(BOB, 1, name="bob", sync=False)
        msgs, synced = await bob.sync()
        assert seqs(msgs) == list(range(1, COUNT + 1)), (
            f"sync should stream seqs 1..{COUNT} in order before synced, got {seqs(msgs)}"
        )
        for i, (msg, ack) in enumerate(zip(msgs, acks), start=1):
            assert msg.get("conv") == conv, f"msg {i} conv: {msg}"
            assert text_of(msg) == f"message {i}", f"msg {i} body: {msg}"
            assert msg.get("id") == ack["id"], f"msg {i} id {msg.get('id')} != ack id {ack['id']}"
            assert msg.get("from") == str(ALICE), f"msg {i} from: {msg}"
        summary = conv_summary(synced, conv)
        assert summary.get("last_seq") == COUNT, f"synced last_seq: {summary}"
        assert summary.get("kind") == "direct", f"synced kind: {summary}"

        ack = await alice.send_acked(conv, 5000, "live one")
        assert ack["seq"] == COUNT + 1, f"the next message should be seq {COUNT + 1}: {ack}"
        msg = await bob.expect("msg", "the live msg after synced")
        assert (msg.get("seq"), msg.get("id"), text_of(msg)) == (COUNT + 1, ack["id"], "live one"), msg
        await bob.expect_quiet(what="the live msg only once")
