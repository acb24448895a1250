"""The graph the session serves is held in one place (Session.set_graph ->
FuseClient.set_graph): a switch changes graph, top and inode table together."""
import errno

from tests.protocol.kernel import memory_graph, serve


async def test_set_graph_serves_the_new_graph_from_the_next_request():
    g1, g2 = memory_graph(), memory_graph()
    async with serve(g1) as (k, s):
        (await k.create(1, b"a")).create()
        assert s.client.graph is g1 and s.graph is g1
        s.set_graph(g2)
        c = s.client
        assert (c.graph, c.top, c.itable, c.nodes) == (g2, g2.top, g2.itable,
                                                      g2.itable.by_nodeid)
        assert s._graph_event not in g1.listeners and s._graph_event in g2.listeners
        assert g2.nursery is s.nursery
        assert (await k.lookup(1, b"a")).errno == errno.ENOENT
        e, _ = (await k.create(1, b"b")).create()
        assert g2.itable.by_nodeid[e.nodeid] and (await k.getattr(e.nodeid)).attr()
    g1.fini()
    g2.fini()
