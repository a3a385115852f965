"""The wire: frames, their codec, and the rules for names and text.

Bytes in, frames out; nothing here imports a socket, ``ssl``, a thread or a
clock, so both ends (and tests) use it alike.
"""
