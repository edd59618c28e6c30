"""GGUF: chat templates that reach Python internals (CVE-2024-34359) and secrets in metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes, describe


def test_gguf_with_an_ordinary_chat_template_passes(tmp_path: Path) -> None:
    report = scan_path(builders.gguf_file(tmp_path, builders.BENIGN_CHAT_TEMPLATE, "model.gguf"))
    assert_passes(report)
    assert report.files[0].formats == ("gguf",)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(builders.SSTI_CHAT_TEMPLATE, id="subclasses-walk"),
        pytest.param(builders.SSTI_POPEN_TEMPLATE, id="builtins-import-popen"),
    ],
)
def test_chat_template_that_escapes_the_sandbox_is_blocked(template: str, tmp_path: Path) -> None:
    report = scan_path(builders.gguf_file(tmp_path, template, "model.gguf"))
    assert_fails_with(report, "gguf.template-injection")
    members = {f.location.member for f in report.findings if f.rule_id == "gguf.template-injection"}
    assert members == {"tokenizer.chat_template"}, describe(report.findings)


def test_injected_template_is_found_by_content_without_a_gguf_name(tmp_path: Path) -> None:
    path = builders.gguf_file(tmp_path, builders.SSTI_CHAT_TEMPLATE, "model.bin")
    assert_fails_with(scan_path(path), "gguf.template-injection")


def test_credential_in_gguf_metadata_is_reported(tmp_path: Path) -> None:
    template = builders.BENIGN_CHAT_TEMPLATE + "{# uploaded with " + builders.AWS_KEY_ID + " #}"
    report = scan_path(builders.gguf_file(tmp_path, template, "model.gguf"))
    assert_fails_with(report, "secrets.credential")
    assert all(builders.AWS_KEY_ID not in f.evidence + f.message for f in report.findings)
