"""The server: listener and sessions, the hub, the message writer, history
streaming and the file relay. See :mod:`securechat.server.listener` for the
threading model and :mod:`securechat.server.hub` for the rule that the hub
never waits.
"""
