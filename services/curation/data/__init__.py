"""Data sets tuneline ships for mixing: general replay and safety/refusal (see generate.py)."""
