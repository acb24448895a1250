"""LinkPins (xlators.core.inode): a request's pins hold what its own task links, keyed by
task; a nested pin holds until released, then the outer one holds again; links with no
pins anywhere, or from another task, stay unpinned."""
import trio

from xlators.core.inode import InodeTable, LinkPins


async def test_nested_pins_hand_back_to_the_outer_one():
    table = InodeTable()
    outer = LinkPins()
    a = table.link(100)
    inner = LinkPins()
    b = table.link(200)
    assert inner.release() == [b] and b.refs == 0
    c = table.link(300)                           # the outer pins again
    assert outer.release() == [a, c] and a.refs == c.refs == 0
    assert table.link(400).refs == 0              # nothing pins any more


async def test_pins_of_two_tasks_stay_apart():
    table = InodeTable()
    got: dict = {}

    async def request(key: int, ready: trio.Event, go: trio.Event) -> None:
        pins = LinkPins()
        ready.set()
        await go.wait()                           # the other request runs meanwhile
        table.link(key)
        got[key] = pins.release()

    go = trio.Event()
    async with trio.open_nursery() as nursery:
        r1, r2 = trio.Event(), trio.Event()
        nursery.start_soon(request, 1, r1, go)
        nursery.start_soon(request, 2, r2, go)
        await r1.wait()
        await r2.wait()
        go.set()
    assert [i.ino for i in got[1]] == [1] and [i.ino for i in got[2]] == [2]
    assert all(i.refs == 0 for i in table)


def test_outside_trio_the_thread_pins():
    table = InodeTable()
    pins = LinkPins()
    x = table.link(5)
    assert x.refs == 1 and pins.release() == [x] and x.refs == 0
