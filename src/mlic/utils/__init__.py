"""Helpers every layer uses: errors, atomic file writes, progress, markdown tables, the environment, the command-line runner, process ranks."""
