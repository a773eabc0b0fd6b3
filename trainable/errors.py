"""Errors that mean "the user gave us something wrong": the CLIs print them and exit with code 2."""


class InputError(Exception):
    """Bad input: a config key or value, a data file, a frame. The message names it and the rule."""


class ConfigError(InputError):
    """A configuration key or value breaks a rule."""


class DataError(InputError):
    """A data source, list file or frame is missing, empty or unreadable."""
