"""The registry's field checks: one bound and one spelling per field (bastion.registry.fields)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import ConfigError
from bastion.registry import fields


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "names no file"),
        (".", "names no file"),
        ("./", "names a folder"),
        ("x/../y", "'..' segment"),
        ("..", "'..' segment"),
        ("a/b/../../../etc/passwd", "'..' segment"),
        ("a\\..\\b", "backslash"),
        ("/etc/passwd", "absolute"),
        ("a/", "names a folder"),
        ("a\x00b", "control character U\\+0000"),
        ("a\nb", "control character U\\+000A"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 128 characters, 256 bytes
        ("a/" * 33 + "b", "levels deep"),
        ("a/" * 2100 + "b", "characters long"),
        ("\ud800", "lone surrogate"),
        ("weights\u202egpj.exe", "invisible character U\\+202E"),
        ("a\u200bb", "invisible character U\\+200B"),
        ("a\u2028b", "invisible character U\\+2028"),
    ],
)
def test_a_member_path_that_could_alias_or_escape_is_refused(path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^path: .*{reason}"):
        fields.normalise_member_path(path)


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("y", "y"),
        ("./y", "y"),
        ("a//b", "a/b"),
        ("a/./b", "a/b"),
        ("weights/model.safetensors", "weights/model.safetensors"),
    ],
)
def test_a_member_path_has_one_spelling(path: str, normal: str) -> None:
    assert fields.normalise_member_path(path) == normal


@pytest.mark.parametrize(
    ("paths", "layout", "reason"),
    [
        (["y", "./y"], "folder", "'y' and 'y' name the same file"),
        (["Model.bin", "model.bin"], "folder", "name the same file"),
        (["caf\u00e9", "cafe\u0301"], "folder", "name the same file"),
        (["a", "a/b"], "folder", "'a' is a file and also the folder of 'a/b'"),
        (["a/b/c", "a/b"], "folder", "is a file and also the folder"),
        (["sub/model.pt"], "file", "layout 'file' takes exactly one file at the top level"),
        (["a", "b"], "file", "layout 'file' takes exactly one file"),
        ([], "folder", "at least one file"),
    ],
)
def test_paths_that_clash_as_a_set_are_refused(paths: list[str], layout: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^files: .*{reason}"):
        fields.check_member_paths(paths, layout=layout)


def test_too_many_members_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^files: 10001 files; at most 10000"):
        fields.check_member_paths([f"f{i}" for i in range(10_001)], layout="folder")


def test_distinct_paths_pass_in_order() -> None:
    assert fields.check_member_paths(["b", "./a/c", "a/d"], layout="folder") == ("b", "a/c", "a/d")
    assert fields.check_member_paths(["model.pt"], layout="file") == ("model.pt",)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (0, "outside 1..2147483647"),
        (-1, "outside"),
        (2**31, "outside"),
        (2**63, "outside"),
        (10**400, "<1329-bit number> is outside"),
        pytest.param(10**5000, "is outside", id="5001-digits"),
        (True, "must be an integer"),
        ("1", "must be an integer"),
        (1.0, "must be an integer"),
    ],
)
def test_a_version_number_fits_the_column(number: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^number: .*{reason}"):
        fields.check_version_number(number)


def test_the_largest_version_number_passes() -> None:
    assert fields.check_version_number(2**31 - 1) == 2**31 - 1


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("fraud", "not MODEL@NUMBER"),
        ("fraud@", "not MODEL@NUMBER"),
        ("fraud@-1", "not MODEL@NUMBER"),
        ("fraud@\u0663", "not MODEL@NUMBER"),  # an Arabic-Indic three
        ("fraud@" + "9" * 40, "out of range"),
        ("fraud@2147483648", "outside 1..2147483647"),
        ("fraud@0", "outside"),
        ("@3", "bad name"),
        ("../x@3", "bad name"),
        ("fr\x00aud@3", "control character"),
    ],
)
def test_a_ref_is_model_at_number(ref: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^parent: .*{reason}"):
        fields.parse_ref(ref)


def test_a_ref_parses() -> None:
    assert fields.parse_ref("fraud-detector@7") == ("fraud-detector", 7)
    # '@' is not a name character, so only the last '@' separates the number.
    with pytest.raises(ConfigError, match=r"^parent: bad name 'a@b'"):
        fields.parse_ref("a@b@2")


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (fields.check_model_name, "", "bad name"),
        (fields.check_model_name, ".hidden", "bad name"),
        (fields.check_model_name, "a" * 201, "201 characters long"),
        (fields.check_model_name, "a/b", "bad name"),
        (fields.check_model_name, "a\x00", "control character"),
        (fields.check_licence, "mit\u202e", "invisible character"),
        (fields.check_source, "hf://acme/\u200b", "invisible character"),
        (fields.check_digest, "sha256:" + "0" * 65, "72 characters long"),
        (fields.check_digest, "sha256:" + "A" * 64, "is not a digest"),
        (fields.check_digest, "md5:" + "0" * 32, "is not a digest"),
        (fields.check_licence, "x" * 101, "101 characters long"),
        (fields.check_licence, "mit\x00", "control character"),
        (fields.check_source, "hf://" + "x" * 2048, "characters long"),
        (fields.check_stage_name, "s" * 65, "65 characters long"),
        (fields.check_stage_name, "", "is empty"),
        (fields.check_token_id, "../x", "is not a token id"),
        (fields.check_token_id, "a" * 33, "33 characters long"),
        (fields.check_description, "ok\x00", "control character U\\+0000"),
        (fields.check_layout, "files", "unknown layout"),
    ],
)
def test_each_field_has_a_bound(check: object, value: str, reason: str) -> None:
    assert callable(check)
    with pytest.raises(ConfigError, match=reason):
        check(value)


def test_a_description_may_span_lines() -> None:
    assert fields.check_description("line one\n\tline two\r\n") == "line one\n\tline two\r\n"
    assert fields.check_description("family \U0001f468\u200d\U0001f469") == "family \U0001f468\u200d\U0001f469"


@given(st.text(max_size=300))
def test_any_text_is_a_path_or_a_config_error(text: str) -> None:
    try:
        normal = fields.normalise_member_path(text)
    except ConfigError as err:
        assert err.message.startswith("path: ")
        return
    assert normal == fields.normalise_member_path(normal)  # normal form is a fixed point
    parts = normal.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert not normal.startswith("/") and "\\" not in normal and "\x00" not in normal
