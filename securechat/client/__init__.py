"""The client core: connection, reconnect and gap filling, commands, file
transfers and downloads. Knows nothing of the terminal; ``securechat.ui``
draws it.
"""
