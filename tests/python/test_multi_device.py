"""Multi-device: a send reaches the sender's other devices and every device of the other member."""

import asyncio

from harness import ALICE, BOB, Clients, expect_quiet_all, run, text_of


def test_send_fans_out_to_other_devices_not_to_the_sender(server):
    run(multi_device(server))


async def multi_device(server):
    async with Clients(server) as c:
        a1 = await c.connect(ALICE, 1, name="alice/1")
        conv = await a1.direct_open(BOB)
        a2 = await c.connect(ALICE, 2, name="alice/2")
        b1 = await c.connect(BOB, 1, name="bob/1")
        b2 = await c.connect(BOB, 2, name="bob/2")

        async def check_fan_out(sender, receivers, cmid, body, seq):
            ack = await sender.send_acked(conv, cmid, body)
            assert ack["seq"] == seq, f"{sender} acked with seq {ack['seq']}, want {seq}"
            for r in receivers:
                msg = await r.expect("msg", f"the msg of {sender}'s send")
                got = (msg.get("conv"), msg.get("seq"), msg.get("id"), text_of(msg))
                assert got == (conv, seq, ack["id"], body), f"{r} got {msg}, ack was {ack}"
                assert (msg.get("from"), msg.get("device")) == (sender.user, sender.device), (
                    f"{r}: msg author should be {sender}: {msg}"
                )
            await asyncio.gather(
                sender.expect_quiet(what="only the ack of its own send, no msg"),
                expect_quiet_all(receivers, what="the msg only once"),
            )

        await check_fan_out(a1, [a2, b1, b2], 11, "from alice's first device", 1)
        await check_fan_out(b2, [b1, a1, a2], 22, "from bob's second device", 2)
