"""`gateway console adduser NAME` and `deluser NAME`: the console's basic-auth users.

adduser asks for the password twice at a terminal, or reads one line with --password-stdin
(for scripts), and writes `[console] users_file` (gateway/passwords.py: scrypt, mode 0600).
A serving console reads the file again when it changes, so no restart is needed.
"""

from __future__ import annotations

import getpass
from typing import TextIO

from gateway.config import ConsoleSettings
from gateway.passwords import USER_NAME, hash_password, read_users, write_users

__all__ = ["run_console_users"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_MIN_LENGTH = 12


class _Refused(Exception):
    """What the command cannot do, in the words it prints."""


def run_console_users(
    console: ConsoleSettings,
    *,
    action: str,
    name: str,
    password_stdin: bool,
    stdin: TextIO,
    out: TextIO,
    err: TextIO,
) -> int:
    """Add (or replace) or delete one user; returns the exit status."""
    path = console.users_file
    if path is None:
        err.write("gateway: [console] users_file is not set; set it to where the users go\n")
        return EXIT_USAGE
    if not USER_NAME.fullmatch(name):
        err.write(f"gateway: {name!r} is not a user name (letters, digits, . _ @ -; 64 at most)\n")
        return EXIT_USAGE
    try:
        users = read_users(path)
        if action == "adduser":
            password = _password(password_stdin=password_stdin, stdin=stdin)
            is_new = name not in users
            users[name] = hash_password(password)
            write_users(path, users)
            out.write(f"{'added' if is_new else 'changed the password of'} {name} in {path}\n")
        else:
            if users.pop(name, None) is None:
                raise _Refused(f"no user {name!r} in {path}")
            write_users(path, users)
            out.write(f"deleted {name} from {path}\n")
    except _Refused as exc:
        err.write(f"gateway: {exc}\n")
        return EXIT_FAILED
    except ValueError as exc:
        err.write(f"gateway: {path}: {exc}\n")
        return EXIT_FAILED
    except OSError as exc:
        err.write(f"gateway: cannot write {path}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    return EXIT_OK


def _password(*, password_stdin: bool, stdin: TextIO) -> str:
    if password_stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except EOFError as exc:
            raise _Refused("no password given (at a terminal, or use --password-stdin)") from exc
        if password != again:
            raise _Refused("the two passwords differ; nothing changed")
    if len(password) < _MIN_LENGTH:
        raise _Refused(f"the password must be at least {_MIN_LENGTH} characters; nothing changed")
    return password
