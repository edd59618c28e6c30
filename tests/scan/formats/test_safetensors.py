"""safetensors: real files pass whatever their header length; headers that lie are reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes, rules


def test_file_written_by_safetensors_passes(tmp_path: Path) -> None:
    report = scan_path(builders.safetensors_file(tmp_path))
    assert_passes(report)
    assert report.files[0].formats == ("safetensors",)


# Header lengths whose first bytes also open another format: 0x80 0x00 (pickle PROTO),
# 0x78 0x01 (a zlib header), 'P' 'p' (protocol-0 pickle opcodes). Regression: the sniffer
# once tried pickle and zlib before safetensors and misread these.


@pytest.mark.parametrize(
    "length",
    [
        0x50,
        0x70,
        0x80,
        0x178,
        0x180,
        0x280,
        0x580,
        0x600,
    ],
    ids=hex,
)
def test_real_file_passes_whatever_its_header_length_looks_like(length: int, tmp_path: Path) -> None:
    report = scan_path(builders.safetensors_with_header_length(tmp_path, length))
    assert_passes(report)
    assert "safetensors" in report.files[0].formats


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(builders.safetensors_trailing_bytes, "safetensors.trailing-data", id="trailing-bytes"),
        pytest.param(builders.safetensors_overlapping, "safetensors.overlap", id="overlapping-offsets"),
        pytest.param(builders.safetensors_bad_dtype, "safetensors.bad-header", id="unknown-dtype"),
        pytest.param(builders.safetensors_header_beyond_file, "safetensors.bad-header", id="header-longer-than-file"),
        pytest.param(builders.safetensors_gap, "safetensors.gap", id="bytes-between-tensors"),
        pytest.param(builders.safetensors_out_of_bounds, "safetensors.out-of-bounds", id="offsets-past-the-end"),
    ],
)
def test_header_that_lies_about_the_data_is_blocked(build: Callable[[Path], Path], rule: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), rule)


def test_header_longer_than_the_file_is_also_reported_as_not_analysed(tmp_path: Path) -> None:
    report = scan_path(builders.safetensors_header_beyond_file(tmp_path))
    assert any(f.is_incomplete for f in report.findings), rules(report)
