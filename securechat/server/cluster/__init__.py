"""Cluster mode: several servers serving one chat through PostgreSQL and Redis.

``bus`` is the Redis side (a stream of events, liveness keys, online tables);
``node`` applies the other servers' events to this server's hub and tracks who is
online where; ``sequencer`` keeps every conversation in number order whichever
server committed its messages; ``peers`` are the mutually authenticated TLS links
between servers and ``remote_files`` relays file transfers over them. See
docs/cluster.md for the whole design.
"""
