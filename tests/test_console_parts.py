"""The console's pure parts with plain values: credentials, the proxy's word, page keys and
links, password hashes and the users file; its settings' refusals; adduser and deluser."""

from __future__ import annotations

import base64
import io
import stat
from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import ConsoleSettings
from gateway.http.consoleauth import Users, basic_credentials, proxy_user
from gateway.http.consolelinks import audit_request, href, parse_key, render_key
from gateway.ops.consoleusers import run_console_users
from gateway.passwords import hash_password, parse_users, read_users, verify_password
from gateway.store.browse import Key


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        (_basic("records:secret:with:colons"), ("records", "secret:with:colons")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        (_basic("no-colon"), None),
        (_basic(":nameless"), None),
        ("Bearer abc", None),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), None),
    ],
)
def test_basic_credentials_are_read_as_rfc_7617_writes_them(
    header: str | None, expected: tuple[str, str] | None
) -> None:
    assert basic_credentials(header) == expected


TRUSTED = [ip_network("10.0.0.0/24"), ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "value", "expected"),
    [
        ("10.0.0.7", "officer", "officer"),
        ("::1", " officer@agency.example ", "officer@agency.example"),
        ("10.0.1.7", "officer", None),  # not a trusted proxy: the header is anyone's
        ("10.0.0.7", None, None),
        ("10.0.0.7", "  ", None),
        ("10.0.0.7", "bad\nname", None),
        (None, "officer", None),
        ("not-an-address", "officer", None),
    ],
)
def test_the_proxy_is_believed_only_from_its_addresses(
    peer: str | None, value: str | None, expected: str | None
) -> None:
    assert proxy_user(peer, value, TRUSTED) == expected


def test_a_page_key_goes_through_a_link_and_back() -> None:
    key = Key("2017-09-13T15:00:00.000000+00:00", "20170913-ABCDEFGHJKMNP")
    assert parse_key(render_key(key)) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nonsense",
        "2017-09-13T15:00:00~",
        "2017-09-13T15:00:00~REF",
        "x~REF",
        "2017-09-13T15:00:00+00:00~a b",
    ],
)
def test_a_page_key_not_written_by_the_console_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- parse_key's one error type
        parse_key(text)


def test_links_keep_the_filters_in_a_stable_order() -> None:
    assert href("/attempts", {}) == "/attempts"
    assert href("/attempts", {"sender": "a@b.example", "before": "k"}) == (
        "/attempts?before=k&sender=a%40b.example"
    )


def test_the_query_makes_the_same_request_as_audits_options() -> None:
    request = audit_request(
        {"since": " 2017-09-13 ", "sender_domain": "lawfirm.example", "office": "", "x": "y"},
        action="list",
    )
    assert (request.since, request.sender_domain, request.office, request.tz) == (
        "2017-09-13",
        "lawfirm.example",
        None,
        "UTC",
    )


def test_a_password_verifies_against_its_hash_and_no_other() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$32768$8$1$")
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("Correct horse battery staple", stored)
    assert not verify_password("correct horse battery staple", None)
    assert not verify_password("x", "scrypt$not$a$hash")
    assert hash_password("same", salt=b"0" * 16) == hash_password("same", salt=b"0" * 16)
    assert hash_password("same") != hash_password("same")  # a fresh salt each time


@pytest.mark.parametrize("line", ["records", "records:plain-text", "bad name:scrypt$1$1$1$a$b"])
def test_a_malformed_users_file_line_is_named(line: str) -> None:
    with pytest.raises(ValueError, match="line 2 is not name:scrypt"):
        parse_users(f"# comment\n{line}\n")


def _users(console: ConsoleSettings, action: str, name: str, stdin: str = "") -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_console_users(
        console,
        action=action,
        name=name,
        password_stdin=True,
        stdin=io.StringIO(stdin),
        out=out,
        err=err,
    )
    return status, out.getvalue() + err.getvalue()


def test_adduser_and_deluser_write_a_0600_file_the_console_reads_again(tmp_path: Path) -> None:
    path = tmp_path / "users"
    console = ConsoleSettings(users_file=path)
    assert _users(console, "adduser", "records", "a long enough password\n") == (
        0,
        f"added records in {path}\n",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = Users(path)
    assert users.check("records", "a long enough password")
    assert not users.check("records", "wrong password here")
    assert _users(console, "adduser", "records", "another long password\n")[0] == 0
    assert not users.check("records", "a long enough password")  # changed file, forgotten
    assert users.check("records", "another long password")
    assert _users(console, "deluser", "records") == (0, f"deleted records from {path}\n")
    assert read_users(path) == {}
    assert not users.check("records", "another long password")


@pytest.mark.parametrize(
    ("console", "action", "name", "stdin", "words"),
    [
        (ConsoleSettings(), "adduser", "records", "x" * 20, "[console] users_file is not set"),
        (None, "adduser", "bad name", "x" * 20, "is not a user name"),
        (None, "adduser", "records", "short\n", "at least 12 characters"),
        (None, "deluser", "nobody", "", "no user 'nobody'"),
    ],
)
def test_console_user_commands_say_what_is_wrong(
    tmp_path: Path,
    console: ConsoleSettings | None,
    action: str,
    name: str,
    stdin: str,
    words: str,
) -> None:
    settings = console or ConsoleSettings(users_file=tmp_path / "users")
    status, text = _users(settings, action, name, stdin)
    assert status != 0
    assert words in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"listen": "127.0.0.1:8026"}, "no authentication is configured"),
        (
            {"listen": "0.0.0.0:8026", "users_file": "/u"},
            "basic auth would send passwords in clear",
        ),
        ({"tls_cert": "/c"}, "go together"),
        ({"user_header": "X-Remote-User"}, "go together"),
    ],
)
def test_the_settings_refuse_a_console_that_is_open_or_sends_passwords_in_clear(
    values: dict[str, str], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        ConsoleSettings.model_validate(values)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"listen": "", "users_file": ""},
        {"listen": "127.0.0.1:8026", "users_file": "/u"},
        {"listen": "[::1]:8026", "users_file": "/u"},
        {"listen": "0.0.0.0:8026", "users_file": "/u", "tls_cert": "/c", "tls_key": "/k"},
        {"listen": "0.0.0.0:8026", "trusted_proxies": ["10.0.0.1/32"], "user_header": "X-User"},
    ],
)
def test_the_settings_take_a_console_that_is_off_local_tls_or_behind_a_proxy(
    values: dict[str, object],
) -> None:
    ConsoleSettings.model_validate(values)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ('users_file = "/etc/gateway/console-users"', "basic auth would send passwords in clear"),
        ("", "no authentication is configured"),
    ],
)
def test_check_config_refuses_the_console_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, words: str
) -> None:
    from gateway.cli import main

    text = Path("config/gateway.toml").read_text(encoding="utf-8")
    listen = "[console]\n# The private"
    assert listen in text
    text = text.replace(listen, f'[console]\nlisten = "0.0.0.0:8026"\n{edit}\n# The private', 1)
    text = text.replace('\nlisten = ""\n# Its own TLS', "\n# Its own TLS", 1)
    text = text.replace('\nusers_file = ""\n', "\n", 1) if edit else text
    config = tmp_path / "gateway.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "console" in err
    assert words in err
    assert "Traceback" not in err
