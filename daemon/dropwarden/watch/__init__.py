"""Watching: inotify events, settling, reconciliation walks and the health of watch roots."""
