"""Access security: calling-system authentication (mTLS, trusted proxy), admin bearer auth, rate limits,
and the start-up checks of the strict profiles."""
