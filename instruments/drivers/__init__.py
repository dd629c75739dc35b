"""Drivers for real microscopes (each behind an optional extra; imported only when used)."""
