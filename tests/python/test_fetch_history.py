"""`fetch` pages of history: latest, before and after, ascending, with `more`."""

from harness import ALICE, BOB, Clients, run, seqs, text_of

COUNT = 30


def test_fetch_pages(server):
    run(fetch_pages(server))


async def fetch_pages(server):
    async with Clients(server) as c:
        alice = await c.connect(ALICE, 1, name="alice")
        conv = await alice.direct_open(BOB)
        acks = {}
        for i in range(1, COUNT + 1):
            ack = await alice.send_acked(conv, i, f"history {i}")
            assert ack["seq"] == i, ack
            acks[i] = ack
        bob = await c.connect(BOB, 1, name="bob", sync=False)
        msgs, _ = await bob.sync()
        assert seqs(msgs) == list(range(1, COUNT + 1)), seqs(msgs)

        def check(page, want_seqs, want_more, what):
            got = seqs(page["msgs"])
            assert got == want_seqs, f"fetch {what}: seqs {got}, want {want_seqs}"
            assert page["more"] is want_more, f"fetch {what}: more {page['more']}, want {want_more}"
            for m in page["msgs"]:
                s = m["seq"]
                assert m.get("conv") == conv, f"fetch {what}: {m}"
                assert m.get("id") == acks[s]["id"], f"fetch {what}: seq {s} id {m.get('id')}, ack {acks[s]}"
                assert text_of(m) == f"history {s}", f"fetch {what}: {m}"
                assert m.get("from") == str(ALICE), f"fetch {what}: {m}"

        check(await alice.fetch(conv, "latest", 10), list(range(21, 31)), True, "latest 10")
        check(await bob.fetch(conv, {"before": 21}, 20), list(range(1, 21)), False, "before 21, limit 20")
        check(await bob.fetch(conv, {"after": 25}, 10), list(range(26, 31)), False, "after 25, limit 10")
