"""One short pipeline function per ``ziplm`` command (the table of commands is `ziplm.commands`).

A pipeline takes the composed Hydra config (``DictConfig``) and nothing else; it is the only layer
that reads a config.
"""

from ziplm.commands import COMMANDS, DEFAULT_COMMAND, Command, CommandNotReadyError, format_command_table

__all__ = ["COMMANDS", "DEFAULT_COMMAND", "Command", "CommandNotReadyError", "format_command_table"]
