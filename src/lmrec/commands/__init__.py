"""Subcommands of `lmrec` beyond the data commands in `lmrec.cli`.

Each module here has `register(subparsers, commands)`, which adds its subparsers and maps each
command name to a function `(args) -> exit code`. `lmrec.cli.COMMAND_MODULES` lists them.
"""
