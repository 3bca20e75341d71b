"""A user who is not a member can neither send to nor fetch a conversation."""

from harness import ALICE, BOB, CAROL, Clients, run, seqs, text_of


def test_non_member_cannot_send_or_fetch(server):
    run(non_member(server))


async def non_member(server):
    async with Clients(server) as c:
        alice = await c.connect(ALICE, 1, name="alice")
        conv = await alice.direct_open(BOB)
        await alice.send_acked(conv, 1, "private")
        bob = await c.connect(BOB, 1, name="bob", sync=False)
        msgs, _ = await bob.sync()
        assert seqs(msgs) == [1], msgs

        carol = await c.connect(CAROL, 1, name="carol", sync=False)
        msgs, synced = await carol.sync()
        assert msgs == [], f"carol should get nothing in sync: {msgs}"
        assert conv not in [s.get("conv") for s in synced["convs"]], f"carol's synced lists the conv: {synced}"

        cmid = "31337"
        await carol.send_text(conv, cmid, "let me in")
        err = await carol.expect("error", f"`error` for carol's send cmid {cmid}")
        assert err.get("code") == "forbidden", f"send by a non-member: {err}"
        assert err.get("cmid") == cmid, f"error should name the send's cmid {cmid}: {err}"
        assert err.get("rid") is None, f"a send's error has no rid: {err}"

        rid = carol.rid()
        await carol.send({"fetch": {"rid": rid, "conv": conv, "from": "latest", "limit": 10}})
        err = await carol.expect("error", f"`error` for carol's fetch rid {rid}")
        assert err.get("code") == "forbidden", f"fetch by a non-member: {err}"
        assert err.get("rid") == rid, f"error should name the fetch's rid {rid}: {err}"

        await bob.expect_quiet(what="nothing from a non-member")
        # Carol's send took no seq.
        ack = await alice.send_acked(conv, 2, "still private")
        assert ack["seq"] == 2, f"a refused send must not take a seq: {ack}"
        msg = await bob.expect("msg", "alice's second message")
        assert (msg.get("seq"), msg.get("from"), text_of(msg)) == (2, str(ALICE), "still private"), msg
