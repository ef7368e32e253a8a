"""The `tinyllm` subcommands: one module each, with `register(subparsers)`.

tinyllm/cli.py builds the parser from these (and from tinyllm.tokenizer.cli); each
module's `register` adds its subparser and sets `handler` to a function
`(args) -> exit status`. Errors the user can fix are raised as `UsageError` (or the
library's ConfigError / DataError / CheckpointError) and printed by cli.main as one
line with exit status 2.
"""
