"""The dropwarden test suite."""
