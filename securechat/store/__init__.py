"""Storage: what the server keeps (accounts, rooms, memberships, messages).

Knows nothing of the network. Engines live beside this module, one per
database (``sqlite``).
"""
