"""OCI distribution (registry) support for orca-build: pull, push, registry cache."""
