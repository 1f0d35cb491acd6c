"""The curation checks, one module each, in the order the pipeline runs them (docs/configuration.md
has the table of each check's policy field and verdict):

schema (in pipeline.py, while the sources stream) → empty → label_agreement → pii → boilerplate →
duplicates → split (held-out split, then split-disjointness) → contamination → token_length →
min-rows (pipeline.py) → mix → canaries.

Each is a plain function of a `CheckContext` (context.py) and the rows: it records an `AuditCheck`
and row `Finding`s in the context's audit and returns the rows that go on.
"""
