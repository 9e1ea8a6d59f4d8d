"""Settings: the built-in default, environment overrides, and errors that name the key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import (
    ListenAddress,
    ResponseMode,
    ServerSettings,
    default_config_path,
    load_settings,
)
from gateway.errors import ConfigError

DEFAULT = default_config_path().read_text(encoding="utf-8")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_built_in_default_describes_the_founding_case() -> None:
    settings = load_settings(None, {})
    (chicago,) = settings.offices
    assert settings.server.listen == [ListenAddress("127.0.0.1", 2525)]
    assert chicago.timezone == "America/Chicago"
    assert chicago.response is ResponseMode.REJECT_AFTER_DATA
    assert chicago.lifecycle.retires == datetime(2017, 9, 12, 5, 0, tzinfo=UTC)
    assert any("525 W. Van Buren" in line for line in chicago.paper_service["en"])
    assert any("525 W. Van Buren" in line for line in chicago.paper_service["es"])
    assert chicago.contact is not None
    assert ".example" in chicago.contact["en"]
    assert all(a.endswith(".example") for a in chicago.addresses)


def test_max_recipients_defaults_to_the_rfc_5321_minimum_of_100() -> None:
    # RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
    assert ServerSettings().max_recipients == 100
    assert load_settings(None, {}).server.max_recipients == 100


def test_environment_overrides_scalars_and_comma_separated_lists() -> None:
    settings = load_settings(
        None,
        {
            "GATEWAY_SERVER__LISTEN": "0.0.0.0:2525, [::1]:2526",
            "GATEWAY_SERVER__MAX_RECIPIENTS": "7",
            "GATEWAY_STORAGE__KEEP_RAW": "true",
            "GATEWAY_CONFIG": "ignored: not a section override",
        },
    )
    assert settings.server.listen == [ListenAddress("0.0.0.0", 2525), ListenAddress("::1", 2526)]
    assert settings.server.max_recipients == 7
    assert settings.storage.keep_raw is True


def test_a_setting_can_be_read_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "hostname"
    secret.write_text("mx.from-secret.example\n", encoding="utf-8")
    settings = load_settings(None, {"GATEWAY_SERVER__HOSTNAME_FILE": str(secret)})
    assert settings.server.hostname == "mx.from-secret.example"


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        (
            'timezone = "America/Chicago"',
            'timezone = "America/Chicgo"',
            "offices[0].timezone",
            "unknown IANA time zone",
        ),
        ('listen = ["127.0.0.1:2525"]', 'listen = ["localhost"]', "server.listen", "host:port"),
        (
            "max_recipients = 100 ",
            "max_recipients = 0 ",
            "server.max_recipients",
            "must be at least 1",
        ),
        (
            "retires = 2017-09-12",
            "retires = 2017-09-10",
            "offices[0]",
            "portal_opens must not be after",
        ),
        (
            'portal_url = "https://eservice.ice.gov/"',
            'portal_url = "eservice.ice.gov"',
            "offices[0].portal_url",
            "not an ASCII http(s) URL",
        ),
        ("[audit]", "[audit]\nlevel = 3", "audit.level", "is not a setting here (known: "),
        (
            'response = "reject-after-data"',
            'response = "bounce"',
            "offices[0].response",
            "reject-at-rcpt",
        ),
        (
            '"occ-chicago-service@occ-chicago.example",',
            '"not-an-address",',
            "offices[0].addresses",
            "not a mail address",
        ),
    ],
)
def test_broken_settings_name_the_key_and_the_problem(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    assert old in DEFAULT
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, DEFAULT.replace(old, new, 1)), {})
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_every_problem_is_listed_in_plain_words(tmp_path: Path) -> None:
    text = (
        DEFAULT.replace("max_recipients = 100 ", "max_recipients = 0 ", 1)
        .replace("[audit]", "[audit]\nlevel = 3", 1)
        .replace("max_message_size = 26214400", 'max_message_size = "big"', 1)
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {})
    problems = dict(caught.value.problems)
    assert problems["server.max_recipients"] == "must be at least 1"
    assert problems["server.max_message_size"] == "must be a whole number"
    assert problems["audit.level"].startswith("is not a setting here")
    message = str(caught.value)
    assert message.startswith("3 problems:")
    assert "Input should" not in message
    assert "Extra inputs" not in message


@pytest.mark.parametrize(
    ("old", "new", "key", "meant"),
    [
        ("max_recipients = 100 ", "max_recipents = 100 ", "server.max_recipents", "max_recipients"),
        (
            'timezone = "America/Chicago"',
            'time_zone = "America/Chicago"',
            "offices[0].time_zone",
            "timezone",
        ),
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean(
    tmp_path: Path, old: str, new: str, key: str, meant: str
) -> None:
    assert old in DEFAULT
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, DEFAULT.replace(old, new, 1)), {})
    assert (key, f"is not a setting here; did you mean {meant!r}?") in caught.value.problems


def test_an_address_in_two_offices_is_an_error(tmp_path: Path) -> None:
    second = DEFAULT[DEFAULT.index("[[offices]]") :].replace(
        'name = "ice-occ-chicago"', 'name = "copy"'
    )
    with pytest.raises(
        ConfigError, match=r"offices: .* is listed by both 'ice-occ-chicago' and 'copy'"
    ):
        load_settings(write(tmp_path, DEFAULT + "\n" + second), {})


def test_unknown_environment_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_SERVER__LISTN: no such setting"):
        load_settings(None, {"GATEWAY_SERVER__LISTN": "0.0.0.0:25"})


def test_unknown_environment_override_lists_every_overridable_section() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"GATEWAY_NOSUCH__KEY": "1"})
    listed = caught.value.problem.removeprefix("no such setting (sections: ").rstrip(")")
    assert listed.split(", ") == [
        "server",
        "storage",
        "audit",
        "delivery",
        "dns",
        "limits",
        "sender_auth",
        "notices",
        "metrics",
        "postmaster",
        "lookup",
        "console",
    ]


def test_sections_once_missing_from_the_error_can_be_overridden() -> None:
    settings = load_settings(
        None,
        {"GATEWAY_LIMITS__NOTICES_PER_SENDER": "7", "GATEWAY_SENDER_AUTH__ENABLED": "false"},
    )
    assert settings.limits.notices_per_sender == 7
    assert settings.sender_auth.enabled is False


def test_invalid_toml_is_reported_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_settings(write(tmp_path, "[server\n"), {})


def test_check_config_prints_phase_boundaries_in_local_time_and_utc(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "2017-09-12 00:00:00 CDT  = 2017-09-12 05:00:00 UTC" in out
    assert "occ-chicago-filings@occ-chicago.example" in out


def test_check_config_failure_is_one_line_and_exit_code_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = write(
        tmp_path, DEFAULT.replace('timezone = "America/Chicago"', 'timezone = "Mars/Base"')
    )
    assert main(["check-config", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "offices[0].timezone" in err
    assert "Traceback" not in err


def test_postmaster_forward_to_is_empty_by_default_and_read_from_the_environment() -> None:
    assert load_settings(None, {}).postmaster.forward_to == []
    settings = load_settings(
        None, {"GATEWAY_POSTMASTER__FORWARD_TO": "ops@agency.example, noc@agency.example"}
    )
    assert settings.postmaster.forward_to == ["ops@agency.example", "noc@agency.example"]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("not an address", "is not in the expected form"),
        ("postmaster@occ-chicago.example", "at a domain this gateway serves"),
    ],
)
def test_postmaster_forward_to_must_be_plain_addresses_outside_our_domains(
    tmp_path: Path, address: str, problem: str
) -> None:
    path = write(tmp_path, DEFAULT.replace("forward_to = []", f'forward_to = ["{address}"]'))
    with pytest.raises(ConfigError, match=problem):
        load_settings(path, {})


BILINGUAL = DEFAULT.replace('languages = ["en"]', 'languages = ["en", "es"]')
ES_CONTACT = (
    'es = "Línea principal de ICE OCC Chicago, indicada en https://occ-chicago.example/contact"\n'
)


def test_built_in_texts_cover_both_languages(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BILINGUAL), {})
    office = settings.offices[0]
    assert office.texts("es").paper_service[0].startswith("Por correo postal")
    assert settings.notices.subject_prefix_in("es") == "Auto: NO PRESENTADO - "


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        (ES_CONTACT, "", "offices[0].contact", "no text in 'es'"),
        (
            'portal_name = { en = "ICE eService portal", es = "portal eService de ICE" }',
            'portal_name = "ICE eService portal"',
            "offices[0].portal_name",
            "give one text per language",
        ),
        (
            "\nes = [\n",
            "\nfr = [\n",
            "offices[0].paper_service.fr",
            "'en' or 'es'",
        ),
    ],
)
def test_an_office_text_missing_a_notice_language_names_the_key_and_the_language(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    assert old in BILINGUAL
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, BILINGUAL.replace(old, new, 1)), {})
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_plain_text_is_enough_for_a_one_language_office(tmp_path: Path) -> None:
    text = DEFAULT.replace(ES_CONTACT, "").replace(
        'portal_name = { en = "ICE eService portal", es = "portal eService de ICE" }',
        'portal_name = "ICE eService portal"',
    )
    office = load_settings(write(tmp_path, text), {}).offices[0]
    assert office.texts("en").portal_name == "ICE eService portal"
    assert office.texts("en").contact is not None


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ('"Auto: NOT FILED - "', "give one prefix per language"),
        ('{ en = "Auto: NOT FILED - " }', "no prefix in 'es'"),
    ],
)
def test_a_subject_prefix_missing_a_notice_language_is_an_error(
    tmp_path: Path, prefix: str, problem: str
) -> None:
    old = 'subject_prefix = { en = "Auto: NOT FILED - ", es = "Auto: NO PRESENTADO - " }'
    assert old in BILINGUAL
    text = BILINGUAL.replace(old, f"subject_prefix = {prefix}")
    with pytest.raises(ConfigError, match=rf"^notices\.subject_prefix: .*{problem}"):
        load_settings(write(tmp_path, text), {})


def test_check_config_names_the_key_and_language_of_a_missing_text_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write(tmp_path, BILINGUAL.replace(ES_CONTACT, ""))
    assert main(["check-config", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "offices[0].contact" in err
    assert "'es'" in err


def test_check_config_prints_every_problem_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = DEFAULT.replace("max_recipients = 100 ", "max_recipents = 0 ", 1).replace(
        'timezone = "America/Chicago"', 'timezone = "America/Chicgo"', 1
    )
    status = main(["check-config", "--config", str(write(tmp_path, text))])
    err = capsys.readouterr().err
    assert status == 2
    assert "gateway: config error: 2 problems:" in err
    assert "server.max_recipents: is not a setting here; did you mean 'max_recipients'?" in err
    assert "offices[0].timezone: unknown IANA time zone" in err


def test_lookup_is_off_by_default_and_takes_its_listener_and_url_from_the_environment() -> None:
    assert load_settings().lookup.listen is None
    assert load_settings().lookup.public_url is None
    environ = {
        "GATEWAY_LOOKUP__LISTEN": "127.0.0.1:8025",
        "GATEWAY_LOOKUP__PUBLIC_URL": "https://eservice-mx.agency.example/ref/",
    }
    lookup = load_settings(None, environ).lookup
    assert lookup.listen is not None
    assert (lookup.listen.host, lookup.listen.port) == ("127.0.0.1", 8025)
    assert lookup.receipt_url("20170913-AB") == (
        "https://eservice-mx.agency.example/ref/20170913-AB"
    )


@pytest.mark.parametrize(
    "url", ["eservice-mx.agency.example/ref/", "https://x/ref/ space", "ftp://x/"]
)
def test_a_public_url_that_is_not_an_absolute_http_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"GATEWAY_LOOKUP__PUBLIC_URL": url})
    assert caught.value.key == "lookup.public_url"
