"""Storage: what the server keeps (accounts, rooms, memberships, messages).

Knows nothing of the network. Engines live beside this module, one per
database (``sqlite``, the embedded default; ``postgres``, shared by several
servers); ``open.open_store`` picks one, so nothing outside this package imports
a database driver.
"""
