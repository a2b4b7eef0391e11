"""pytest plugin for projects using taskq (filled in below)."""
