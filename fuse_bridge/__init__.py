"""fuse_bridge: xlfs's FUSE transport (the kernel protocol on /dev/fuse, under trio).

It turns each kernel request into a call frame passed down a translator graph and the
result into exactly one reply.  See docs/architecture.md and docs/interrupts.md.
"""
