"""Training service: dataset.approved → a TRL/PEFT run in a subprocess → candidate.ready."""
