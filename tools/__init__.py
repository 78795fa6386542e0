"""Contributor tools: input fuzzing and mutation testing (see README.md here).  Not part of
the installed package."""
