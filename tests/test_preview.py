"""`gateway preview`: what template editors see, and the HTML checked in a real browser engine."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import default_config_path
from tests.chromium import needs_chromium, run_chromium

SAMPLES = Path(__file__).parent / "samples"
CONFIG = str(default_config_path())
PORTAL = "https://eservice.ice.gov/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def preview(capsys: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    status = main(["preview", "--config", CONFIG, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.decode("utf-8")


def test_preview_without_a_message_renders_the_built_in_sample(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = preview(capsysbinary)
    assert status == 0
    text = out.decode("utf-8")
    assert text.startswith('NOT FILED OR SERVED: your e-mail "Motion to Continue')
    assert PORTAL in text


def test_preview_of_a_message_as_a_whole_eml_goes_to_its_return_path_only(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = preview(
        capsysbinary, "--message", str(SAMPLES / "injection.eml"), "--format", "eml"
    )
    assert status == 0
    message = email.message_from_bytes(out, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "attacker@evil.example"
    assert message["Cc"] is None
    assert message["Bcc"] is None
    assert message["Auto-Submitted"] == "auto-replied"
    assert "DKIM-Signature" not in message  # signed only when sent


def test_preview_sender_option_overrides_the_headers(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = preview(
        capsysbinary,
        "--message",
        str(SAMPLES / "plain.eml"),
        "--format",
        "eml",
        "--sender",
        "clerk@ruizlaw.example",
    )
    assert status == 0
    assert b"\r\nTo: clerk@ruizlaw.example\r\n" in out


def test_preview_finds_the_office_from_the_retired_address_and_renders_html(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = preview(
        capsysbinary,
        "--message",
        str(SAMPLES / "encoded-subject.eml"),
        "--format",
        "html",
        "--languages",
        "es,en",
    )
    assert status == 0
    html = out.decode("utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="es">' in html
    assert "Moción para reabrir" in html
    assert html.index("NO PRESENTADO") < html.index("NOT FILED OR SERVED")


def test_preview_of_the_advisory(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = preview(
        capsysbinary, "--kind", "advisory", "--received", "2017-09-11T15:00:00+00:00"
    )
    assert status == 0
    text = out.decode("utf-8")
    assert text.startswith("FROM SEPTEMBER 12, 2017, E-MAIL TO")
    assert "Arrived: Monday, September 11, 2017, 10:00 AM CDT" in text
    assert "Reference: 20170911-PREVIEW000" in text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--office", "springfield"), "no office named 'springfield' (offices: ice-occ-chicago)"),
        (("--languages", "fr"), "no templates in 'fr'"),
        (("--message", "/nonexistent.eml"), "cannot read /nonexistent.eml"),
        (("--received", "yesterday"), "not an ISO-8601 time"),
        (("--sender", "a@b.example, c@d.example"), "is not one plain mail address"),
        (("--templates", "/nonexistent"), "no template set 'default'"),
    ],
)
def test_preview_problems_exit_2_with_a_message(
    capsysbinary: pytest.CaptureFixture[bytes], args: tuple[str, ...], problem: str
) -> None:
    status, out, err = preview(capsysbinary, *args)
    assert status == 2
    assert out == b""
    assert problem in err


def test_preview_without_any_usable_sender_asks_for_one(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    message = tmp_path / "anonymous.eml"
    message.write_bytes(
        b"From: Somebody <not-an-address>\r\nTo: occ-chicago-filings@occ-chicago.example\r\n"
        b"Subject: x\r\n\r\nhi\r\n"
    )
    status, _, err = preview(capsysbinary, "--message", str(message))
    assert status == 2
    assert "pass --sender ADDRESS" in err


@pytest.mark.parametrize(
    ("date_header", "arrived"),
    [
        (b"Date: Tue, 12 Sep 2017 15:30:00 -0000\r\n", "Tuesday, September 12, 2017, 10:30 AM CDT"),
        (b"Date: yesterday afternoon\r\n", "Tuesday, September 12, 2017, 9:14 AM CDT"),
        (b"", "Tuesday, September 12, 2017, 9:14 AM CDT"),
    ],
)
def test_preview_takes_the_arrival_from_the_date_header_when_it_can(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, date_header: bytes, arrived: str
) -> None:
    message = tmp_path / "dated.eml"
    message.write_bytes(
        b"From: ana@ruizlaw.example\r\nTo: someone@elsewhere.example, x@bad..example\r\n"
        + date_header
        + b"Subject: Brief - A 123-456-789 and again A123456789\r\n\r\nhi\r\n"
    )
    status, out, _ = preview(capsysbinary, "--message", str(message))
    assert status == 0
    text = out.decode("utf-8")
    assert f"Arrived: {arrived}" in text
    # No retired address among the recipients: the office's first one stands in.
    assert "Sent to: occ-chicago-filings@occ-chicago.example" in text
    assert "A-number: A123-456-789\n" in text


def test_preview_lists_at_most_the_capped_number_of_parts(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    parts = b"".join(
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b'filename="doc-%03d.pdf"\r\n\r\nx\r\n' % n
        for n in range(300)
    )
    message = tmp_path / "many.eml"
    message.write_bytes(
        b"From: ana@ruizlaw.example\r\nTo: occ-chicago-filings@occ-chicago.example\r\n"
        b'Subject: many\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + parts
        + b"--b--\r\n"
    )
    status, out, _ = preview(capsysbinary, "--message", str(message))
    assert status == 0
    assert "and 275 more" in out.decode("utf-8")  # 300 attachments recorded, 25 listed


def test_dkim_keygen_reports_unusable_destinations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["dkim-keygen", "--config", CONFIG, "--out", str(blocker / "key.pem")]) == 1
    assert "cannot write" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    monkeypatch.setenv("GATEWAY_NOTICES__DKIM_KEY_FILE", str(garbage))
    assert main(["dkim-keygen", "--config", CONFIG]) == 2
    assert "notices.dkim_key_file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A real browser engine


@needs_chromium
@pytest.mark.parametrize("languages", ["en", "es", "en,es"])
@pytest.mark.parametrize("width", [1024, 390])
def test_chromium_renders_the_html_preview_with_the_statement_and_the_portal(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, width: int, languages: str
) -> None:
    status, html, _ = preview(
        capsysbinary,
        "--message",
        str(SAMPLES / "multipart-attachments.eml"),
        "--format",
        "html",
        "--languages",
        languages,
    )
    assert status == 0
    page = tmp_path / "notice.html"
    page.write_bytes(html)
    png = tmp_path / "notice.png"

    shot = run_chromium(
        page, tmp_path / "profile-shot", f"--screenshot={png}", f"--window-size={width},1400"
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert int.from_bytes(data[16:20], "big") == width  # IHDR width
    assert len(data) > 20_000  # a rendered page, not a blank one

    dump = run_chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    dom = dump.stdout.decode("utf-8")
    statement = {"en": "NOT FILED OR SERVED", "es": "NO PRESENTADO NI NOTIFICADO"}
    for language in languages.split(","):
        assert statement[language] in dom
    assert f'href="{PORTAL}"' in dom
    assert f">{PORTAL}<" in dom


def test_preview_in_spanish_shows_the_offices_spanish_texts(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = preview(capsysbinary, "--languages", "es")
    assert status == 0
    text = out.decode("utf-8")
    assert "Por correo postal a ICE Office of the Chief Counsel" in text
    assert "Consultas: Línea principal de ICE OCC Chicago" in text
    assert "By mail to" not in text


def test_preview_in_a_language_an_office_text_lacks_names_the_key(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    text = default_config_path().read_text(encoding="utf-8")
    spanish = 'es = "Línea principal de ICE OCC Chicago, indicada en https://occ-chicago.example/contact"\n'
    assert spanish in text
    config = tmp_path / "gateway.toml"
    config.write_text(text.replace(spanish, ""), encoding="utf-8")
    status = main(["preview", "--config", str(config), "--languages", "en,es"])
    captured = capsysbinary.readouterr()
    assert status == 2
    assert captured.out == b""
    err = captured.err.decode("utf-8")
    assert "contact" in err
    assert "no text in 'es'" in err
