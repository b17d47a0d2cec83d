"""Plumbing every stage uses: errors, statistics, locks, bounded user-file reads,
the marker key, atomic writes and the scan settings (the bottom layer)."""
