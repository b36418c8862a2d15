"""Field types shared by suites and inventories: numbers held to a range, and the device strings
that reach an ssh command line or a remote shell (host, user, ssh_alias, proxy_jump, python,
workdir), held to what can work.

Remote commands are quoted (transport/), so these rules are not what stops injection. They turn a
value that can never work, or one that only works as an accident of quoting, into an error that
says why at load, before anything connects: an ssh host starting with '-' is read as an option,
a `python` with a space is a command line rather than an interpreter, and `..` or `$HOME` in a
workdir would not be expanded the way its writer meant.
"""

import re
from typing import Annotated

from pydantic import AfterValidator

from agent.schema import range_problem


def bounded(kind, low, high, low_allowed=True):
    """An int or float field from low to high, whose error names the range and the value."""
    def check(value):
        message = range_problem(value, low, high, low_allowed)
        if message:
            raise ValueError(message)
        return value
    return Annotated[kind, AfterValidator(check)]


_HOST_CHARS = re.compile(r"^[A-Za-z0-9._:%-]+$")     # names, IPv4, IPv6 (with a %zone)
_USER_CHARS = re.compile(r"^[A-Za-z0-9._@-]+$")
_HOP = re.compile(r"^(?:[A-Za-z0-9._@-]+@)?(?:\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9._%-]+)"
                  r"(?::[0-9]+)?$")
_COMMAND_CHARS = re.compile(r"^[A-Za-z0-9._+/-]+$")


def _not_empty_or_option(value, what):
    if not value:
        raise ValueError("empty: give the %s, or leave the field out" % what)
    if value.startswith("-"):
        raise ValueError("starts with '-', which ssh would read as an option: %r is not a %s"
                         % (value, what))


def check_host(value):
    _not_empty_or_option(value, "host name or address")
    if not _HOST_CHARS.match(value):
        raise ValueError("%r: a host may hold only letters, digits and . - _ : %% (a name, an IPv4 "
                         "or an IPv6 address)" % value)
    return value


def check_alias(value):
    _not_empty_or_option(value, "Host of your ssh_config")
    if not _HOST_CHARS.match(value):
        raise ValueError("%r: an ssh_alias may hold only letters, digits and . - _ : %%" % value)
    return value


def check_user(value):
    _not_empty_or_option(value, "user name")
    if not _USER_CHARS.match(value):
        raise ValueError("%r: a user may hold only letters, digits and . - _ @" % value)
    return value


def check_proxy_jump(value):
    _not_empty_or_option(value, "jump host ([user@]host[:port], comma-separated)")
    for hop in value.split(","):
        _not_empty_or_option(hop, "jump host ([user@]host[:port])")
        if not _HOP.match(hop):
            raise ValueError("%r: each hop is [user@]host[:port] of letters, digits and . - _ "
                             "(hops separated by commas)" % hop)
    return value


def check_python(value):
    if not value:
        raise ValueError("empty: give the device's interpreter (python3, or an absolute path)")
    if value.startswith("-"):
        raise ValueError("starts with '-': %r is an option, not an interpreter" % value)
    if value.startswith("~"):
        raise ValueError("%r: ~ is not expanded here: give the absolute path (/home/USER/...) "
                         "or a command name on the device's PATH (python3)" % value)
    if not _COMMAND_CHARS.match(value):
        raise ValueError("%r: the interpreter is one command, not a command line: letters, digits"
                         " and . _ + - / only, no spaces or shell characters (put arguments in "
                         "env:, or a wrapper script at an absolute path)" % value)
    if "/" in value and not value.startswith("/"):
        raise ValueError("%r: give a command name found on the device's PATH (python3) or an "
                         "absolute path (/usr/bin/python3); a relative path depends on the "
                         "folder the agent starts in" % value)
    return value


def check_workdir(value):
    """A workdir: absolute, or under the device user's home (~, ~/x); a relative one is taken as
    relative to that home and stored as ~/x, never against the controller's folder."""
    if not value:
        raise ValueError("empty: give a folder on the device, or leave the field out for the "
                         "default")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("holds a control character (a newline?): %r" % value)
    if "$" in value or "`" in value:
        raise ValueError("%r: $ and ` are not expanded in a workdir: write ~/... for the device "
                         "user's home, or an absolute path" % value)
    if value.startswith("~") and not (value == "~" or value.startswith("~/")):
        raise ValueError("%r: only ~ or ~/... (the device user's home) is expanded; another "
                         "user's ~name is not: give an absolute path" % value)
    if ".." in value.split("/"):
        raise ValueError("%r: a '..' component is refused, so a workdir cannot climb out of the "
                         "folder it names: give the folder itself" % value)
    if value.startswith(("/", "~")):
        return value
    rest = value
    while rest.startswith("./"):
        rest = rest[2:].lstrip("/")
    return "~" if rest in ("", ".") else "~/" + rest


def check_tool_path(value):
    """A tool on the device (benchmark_model): an absolute path, no control characters."""
    if not value.startswith("/"):
        raise ValueError("%r: give the tool's absolute path on the device" % value)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("holds a control character (a newline?): %r" % value)
    return value


def check_background_command(value):
    """A device's background command: a shell command line the agent runs beside a case."""
    from agent.schema import MAX_BACKGROUND_COMMAND
    if not value.strip():
        raise ValueError("empty: give the shell command line to run beside a case")
    if len(value) > MAX_BACKGROUND_COMMAND or "\x00" in value:
        raise ValueError("at most %d characters, no NUL" % MAX_BACKGROUND_COMMAND)
    return value


Host = Annotated[str, AfterValidator(check_host)]
Alias = Annotated[str, AfterValidator(check_alias)]
User = Annotated[str, AfterValidator(check_user)]
ProxyJump = Annotated[str, AfterValidator(check_proxy_jump)]
Python = Annotated[str, AfterValidator(check_python)]
Workdir = Annotated[str, AfterValidator(check_workdir)]
ToolPath = Annotated[str, AfterValidator(check_tool_path)]
BackgroundCommand = Annotated[str, AfterValidator(check_background_command)]
