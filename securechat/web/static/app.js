// The web client; replaced by the real app.
