"""Media-plane helpers: TURN credentials, and the SFU."""
