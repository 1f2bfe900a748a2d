"""The subcommands behind the command line, each a plain function returning an exit code."""
