"""The web client: served by the securechat server over HTTPS, chatting over WebSocket."""
