"""The audit's stages glued in order: compare the detectors, check before work,
duplicates and leaks, the benchmark against a truth, clean, the result, scan, the
in-memory API and retrain (see docs/design.md, "Layout")."""
