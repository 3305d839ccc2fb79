"""Thin typed wrappers over Linux syscalls and kernel files. No policy lives here."""
