"""One module per `bisenet-rt` subcommand: NAME (optional), HELP, add_arguments(parser), run(args) -> int."""
