"""The registry: the append-only event log, its projections, and the queries over them."""
