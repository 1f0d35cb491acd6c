"""Curation service: audits, cleans and mixes submitted datasets, then approves or rejects them."""
