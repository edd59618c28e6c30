"""The `bastion` command: thin wiring over the library, one module per command group."""
