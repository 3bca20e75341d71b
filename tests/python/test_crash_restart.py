"""Acked messages survive SIGKILL: after a restart on the same data dir they sync and fetch gap-free."""

from harness import ALICE, BOB, Clients, conv_summary, run, seqs, text_of

COUNT = 50


def test_acked_messages_survive_sigkill(fsync_server):
    server = fsync_server
    tokens = {
        "alice": server.token(ALICE, 1),
        "bob": server.token(BOB, 1),
    }

    async def before_crash():
        async with Clients(server) as c:
            alice = await c.connect(ALICE, 1, name="alice", token=tokens["alice"])
            conv = await alice.direct_open(BOB)
            acks = []
            for i in range(1, COUNT + 1):
                ack = await alice.send_acked(conv, 100 + i, f"durable {i}")
                assert ack["seq"] == i, ack
                acks.append(ack)
            # SIGKILL with the connection open, right after the last ack.
            server.kill()
            return conv, acks

    conv, acks = run(before_crash())
    server.start()  # same data dir (and dev secret), a new port

    async def after_restart():
        async with Clients(server) as c:
            # Tokens minted before the crash stay valid: the dev secret is in the data dir.
            bob = await c.connect(BOB, 1, name="bob", token=tokens["bob"], sync=False)
            msgs, synced = await bob.sync()
            assert seqs(msgs) == list(range(1, COUNT + 1)), (
                f"after SIGKILL and restart, sync should give seqs 1..{COUNT}, got {seqs(msgs)}"
            )
            for msg, ack in zip(msgs, acks):
                s = msg["seq"]
                assert (msg.get("id"), text_of(msg)) == (ack["id"], f"durable {s}"), f"seq {s}: {msg}, ack {ack}"
            assert conv_summary(synced, conv).get("last_seq") == COUNT, synced

            page = await bob.fetch(conv, "latest", COUNT)
            assert seqs(page["msgs"]) == list(range(1, COUNT + 1)), f"fetch after restart: {seqs(page['msgs'])}"
            assert page["more"] is False, f"fetch latest {COUNT} of {COUNT}: more should be false"
            assert [m.get("id") for m in page["msgs"]] == [a["id"] for a in acks], "fetch ids != ack ids"

            # The seq stream goes on without reuse.
            alice = await c.connect(ALICE, 1, name="alice", token=tokens["alice"])
            ack = await alice.send_acked(conv, 9999, "after the crash")
            assert ack["seq"] == COUNT + 1, f"the first message after restart should be seq {COUNT + 1}: {ack}"
            assert ack["id"] not in {a["id"] for a in acks}, f"message id reused after restart: {ack}"
            msg = await bob.expect("msg", "the live msg after restart")
            assert (msg.get("seq"), msg.get("id")) == (COUNT + 1, ack["id"]), msg

    run(after_restart())
