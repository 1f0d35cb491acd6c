"""Models and suites: loading and hashing weights, the suite catalogue and the shipped suites."""
