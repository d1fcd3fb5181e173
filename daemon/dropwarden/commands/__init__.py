"""Built-in subcommands of the `dropwarden` command line, one module each."""
