"""Keras: HDF5 `.h5` configs and Keras 3 `.keras` zips; Lambda layers and code-naming configs."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity
from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_incomplete_with, assert_passes, describe

pytest.importorskip("h5py")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.keras_h5_benign, id="h5-dense"),
        pytest.param(builders.keras3_benign, id="keras3-dense"),
    ],
)
def test_benign_keras_model_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    report = scan_path(build(tmp_path))
    assert_passes(report)
    assert "keras" in report.files[0].formats


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(builders.keras_h5_lambda, "keras.lambda-layer", id="h5-lambda"),
        pytest.param(builders.keras_h5_lambda_escaped, "keras.lambda-layer", id="h5-lambda-spelt-in-json-escapes"),
        pytest.param(builders.keras3_lambda, "keras.lambda-layer", id="keras3-lambda"),
        pytest.param(builders.keras3_builtins_eval, "keras.unsafe-module", id="keras3-builtins-eval-function"),
    ],
)
def test_keras_model_that_carries_code_is_blocked(build: Callable[[Path], Path], rule: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), rule)


def test_keras3_lambda_is_located_in_config_json(tmp_path: Path) -> None:
    report = scan_path(builders.keras3_lambda(tmp_path))
    locations = {f.location.member for f in report.findings if f.rule_id == "keras.lambda-layer"}
    assert locations == {"config.json"}


@pytest.mark.parametrize("name", ["weights.bin", "model.zip"])
def test_keras_lambda_is_found_by_content_whatever_the_name(name: str, tmp_path: Path) -> None:
    h5 = builders.keras_h5_lambda(tmp_path).rename(tmp_path / f"h5-{name}")
    archive = builders.keras3_lambda(tmp_path).rename(tmp_path / f"keras-{name}")
    assert_fails_with(scan_path(h5), "keras.lambda-layer")
    assert_fails_with(scan_path(archive), "keras.lambda-layer")


# -- reading configs as the loaders do -----------------------------------------------------------

_LAMBDA3 = builders._keras3_lambda()  # the corpus' own Lambda
_EVAL = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}
_DENSE = builders._keras3_dense("dense", 2)  # the corpus' own layer shapes
_LAMBDA_H5 = json.loads(builders._keras2_model_config([builders._keras2_lambda()]))  # same
_BENIGN_H5 = json.loads(builders._keras2_model_config([builders._keras2_dense("dense", 8)]))  # same


def _h5(folder: Path, name: str, attrs: dict[str, str], *, latest: bool = False) -> Path:
    import h5py  # noqa: PLC0415

    path = folder / name
    with h5py.File(path, "w", libver="latest" if latest else "earliest") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        for key, value in attrs.items():
            f.attrs[key] = value.encode("utf-8")
        f.create_group("model_weights").create_dataset("kernel:0", data=np.ones((4, 8), dtype=np.float32))
    return path


def test_config_after_a_long_whitespace_run_is_read(tmp_path: Path) -> None:
    """json.loads skips any whitespace after `{`; the old scanner gave up after 16 bytes."""
    text = json.dumps(_LAMBDA_H5).replace("{", "{" + " \t\n" * 4000, 1)
    assert json.loads(text) == _LAMBDA_H5
    report = scan_path(_h5(tmp_path, "spaced.h5", {"model_config": text}))
    assert_fails_with(report, "keras.lambda-layer")


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param(
            {"model_config": json.dumps(_BENIGN_H5), "model_config_v2": json.dumps(_LAMBDA_H5)}, id="decoy-first"
        ),
        pytest.param({"backup": json.dumps(_BENIGN_H5), "model_config": json.dumps(_LAMBDA_H5)}, id="decoy-second"),
        pytest.param(
            {"model_config": json.dumps(_BENIGN_H5), "training_config": json.dumps({"loss": _EVAL})},
            id="training-config",
        ),
    ],
)
def test_every_config_in_the_file_is_judged_not_the_first_match(attrs: dict[str, str], tmp_path: Path) -> None:
    report = scan_path(_h5(tmp_path, "decoy.h5", attrs))
    assert_fails_with(report, "keras.lambda-layer", "keras.unsafe-module")


def test_config_in_dense_attribute_storage_is_read(tmp_path: Path) -> None:
    """Past eight attributes (libver latest) HDF5 keeps them in a fractal heap, not the object header."""
    attrs = {f"note_{i}": f"padding {i}" for i in range(12)} | {"model_config": json.dumps(_LAMBDA_H5)}
    path = _h5(tmp_path, "dense.h5", attrs, latest=True)
    assert b"FRHP" in path.read_bytes()
    assert_fails_with(scan_path(path), "keras.lambda-layer")


def test_attributes_in_a_filtered_heap_are_not_analysed(tmp_path: Path) -> None:
    attrs = {f"note_{i}": f"padding {i}" for i in range(12)} | {"model_config": json.dumps(_BENIGN_H5)}
    path = _h5(tmp_path, "filtered.h5", attrs, latest=True)
    data = bytearray(path.read_bytes())
    at = data.index(b"FRHP")
    data[at + 7 : at + 9] = (16).to_bytes(2, "little")  # an I/O filter pipeline: the heap may be compressed
    path.write_bytes(bytes(data))
    assert_incomplete_with(scan_path(path), "scan.incomplete")


def test_benign_keras2_h5_with_both_configs_passes(tmp_path: Path) -> None:
    report = scan_path(_h5(tmp_path, "ok.h5", {"model_config": json.dumps(_BENIGN_H5), "training_config": "{}"}))
    assert_passes(report)


# -- .keras: config.json as json.loads(bytes) reads it -------------------------------------------


def _keras_zip(folder: Path, name: str, config: bytes, extra: dict[str, bytes] | None = None) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        archive.writestr("config.json", config)
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return path


def _config(layers: list[dict[str, object]]) -> dict[str, object]:
    return builders._keras3_config(layers)  # the corpus' own model shape


_ENCODINGS = {
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode(),
    "utf-16": lambda text: text.encode("utf-16"),
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-32": lambda text: text.encode("utf-32"),
}


@pytest.mark.parametrize("encoding", sorted(_ENCODINGS))
def test_config_json_in_any_encoding_keras_accepts_is_judged(encoding: str, tmp_path: Path) -> None:
    raw = _ENCODINGS[encoding](json.dumps(_config([_LAMBDA3, _DENSE])))
    assert json.loads(raw)["class_name"] == "Sequential"  # what Keras 3 does with config.json's bytes
    report = scan_path(_keras_zip(tmp_path, "model.keras", raw))
    assert_fails_with(report, "keras.lambda-layer")
    assert {f.location.member for f in report.findings if f.rule_id == "keras.lambda-layer"} == {"config.json"}


@pytest.mark.parametrize("encoding", sorted(_ENCODINGS))
def test_benign_config_json_in_any_encoding_passes(encoding: str, tmp_path: Path) -> None:
    report = scan_path(_keras_zip(tmp_path, "model.keras", _ENCODINGS[encoding](json.dumps(_config([_DENSE])))))
    assert_passes(report)
    assert "keras" in report.files[0].formats


def test_config_json_that_does_not_parse_is_not_analysed(tmp_path: Path) -> None:
    broken = json.dumps(_config([_DENSE]))[:-3].encode()
    assert_incomplete_with(scan_path(_keras_zip(tmp_path, "model.keras", broken)), "scan.incomplete")


def test_config_serialised_inside_a_string_is_judged(tmp_path: Path) -> None:
    inner = json.dumps(_config([_LAMBDA3]))
    outer = _config([_DENSE]) | {"notes": inner}
    assert_fails_with(scan_path(_keras_zip(tmp_path, "nested.keras", json.dumps(outer).encode())), "keras.lambda-layer")


# -- what a config names -------------------------------------------------------------------------


def _activation(module: str, name: str) -> dict[str, object]:
    return {"module": module, "class_name": "function", "config": name, "registered_name": "function"}


@pytest.mark.parametrize(
    ("obj", "rule", "severity"),
    [
        pytest.param(_activation("keras.src.utils.file_utils", "get_file"), "keras.unsafe-module", Severity.CRITICAL, id="get-file"),
        pytest.param(_activation("keras.config", "enable_unsafe_deserialization"), "keras.unsafe-module", Severity.CRITICAL, id="safe-mode-off"),
        pytest.param(_activation("keras.models", "load_model"), "keras.unsafe-module", Severity.CRITICAL, id="nested-load"),
        pytest.param(_activation("tensorflow", "py_function"), "keras.unsafe-module", Severity.CRITICAL, id="tf-py-function"),
        pytest.param(_activation("os", "system"), "keras.unsafe-module", Severity.CRITICAL, id="os-system"),
        pytest.param(_activation("kerasevil.layers", "relu"), "keras.custom-object", Severity.HIGH, id="keras-prefix-is-not-keras"),
        pytest.param(_activation("keras.src.backend.common.global_state", "clear_session"), "keras.unsafe-module", Severity.HIGH, id="keras-function-outside-activations"),
        pytest.param(
            {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/tmp/x"}, "registered_name": None},
            "keras.external-model", Severity.HIGH, id="tfsm-layer",
        ),
        pytest.param(
            {"module": "keras.layers", "class_name": "Dense", "config": {}, "registered_name": "builtins>eval"},
            "keras.unsafe-module", Severity.CRITICAL, id="registered-name",
        ),
        pytest.param(
            {"class_name": "Dense", "config": {"function_type": "lambda", "function": ["4wEAAAA", None, None]}},
            "keras.lambda-layer", Severity.CRITICAL, id="marshal-under-another-class-name",
        ),
    ],
)  # fmt: skip
def test_config_that_names_code_is_flagged(
    obj: dict[str, object], rule: str, severity: Severity, tmp_path: Path
) -> None:
    layer = builders._keras3_dense("dense", 2, activation=obj) if obj.get("class_name") == "function" else obj  # same
    report = scan_path(_keras_zip(tmp_path, "named.keras", json.dumps(_config([layer])).encode()))
    assert_fails_with(report, rule)
    assert max(f.severity for f in report.findings if f.rule_id == rule) is severity, describe(report.findings)


def test_real_keras3_functional_config_passes(tmp_path: Path) -> None:
    """A functional model with keras_hub's registered names, losses, metrics and activation objects."""
    backbone = {
        "module": "keras_hub.src.models.gemma.gemma_backbone",
        "class_name": "GemmaBackbone",
        "config": {"name": "gemma_backbone", "vocabulary_size": 256},
        "registered_name": "keras_hub>GemmaBackbone",
    }
    compile_config = {
        "optimizer": {
            "module": "keras.optimizers",
            "class_name": "Adam",
            "config": {"learning_rate": 0.001},
            "registered_name": None,
        },
        "loss": {
            "module": "keras.losses",
            "class_name": "SparseCategoricalCrossentropy",
            "config": {"from_logits": True},
            "registered_name": None,
        },
        "metrics": [
            {
                "module": "keras.metrics",
                "class_name": "MeanMetricWrapper",
                "config": {"fn": "accuracy"},
                "registered_name": None,
            }
        ],
    }
    gelu = _activation("keras.src.activations.activations", "gelu")
    config = _config([builders._keras3_dense("d1", 4, activation=gelu), backbone]) | {
        "compile_config": compile_config
    }  # same
    report = scan_path(_keras_zip(tmp_path, "real.keras", json.dumps(config).encode()))
    assert_passes(report)


# -- tokenizer_config.json chat templates --------------------------------------------------------


def test_tokenizer_config_chat_templates_are_judged(tmp_path: Path) -> None:
    hostile = {
        "chat_template": [
            {"name": "default", "template": "{{ m.role }}"},
            {"name": "tool_use", "template": "{{ x['__glo' ~ 'bals__'] }}"},
        ]
    }
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer_config.json").write_text(json.dumps(hostile))
    report = scan_path(tmp_path / "bad")
    assert_fails_with(report, "hf-tokenizer.template-injection")
    benign = {
        "chat_template": "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}",
        "eos_token": "</s>",
    }
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "tokenizer_config.json").write_text(json.dumps(benign))
    assert_passes(scan_path(tmp_path / "good"))


def test_a_flood_of_json_starts_ends_as_not_analysed(tmp_path: Path) -> None:
    """Every `{"` is a place a config could start; millions of them are an attack on the scanner's time."""
    path = tmp_path / "flood.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88) + b'{"{"' * 500_000)  # signature, empty superblock
    assert_incomplete_with(scan_path(path), "scan.limit-exceeded")


def test_json_objects_finds_a_config_that_starts_inside_another_ones_string() -> None:
    """A reader may start at a `{"` that closes a string of a clean document (overlapping attributes)."""
    from bastion.scan.formats.keras import json_objects  # noqa: PLC0415
    from bastion.scan.source import MemorySource  # noqa: PLC0415

    clean = '{"note": "x{", "class_name": "Lambda", "config": {}}'
    found = [doc for _at, doc in json_objects(MemorySource(clean.encode(), "x"), 1 << 20)]
    assert {"note": "x{", "class_name": "Lambda", "config": {}} in found
    assert {", ": "class_name"} not in found  # the shifted reading fails: it is tried, not invented


def _layer(class_name: str, config: dict[str, object]) -> dict[str, object]:
    return {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}


@pytest.mark.parametrize(
    ("class_name", "field", "path"),
    [
        pytest.param("IntegerLookup", "vocabulary", "https://example.invalid/v.txt", id="lookup-url"),
        pytest.param("TextVectorization", "vocabulary", "~/.ssh/id_rsa", id="vectorization-home"),
        pytest.param("StringLookup", "vocabulary", "assets/../../../etc/passwd", id="lookup-dotdot"),
        pytest.param("Dense", "filepath", "C:\\secrets.txt", id="any-class-path-field-drive"),
    ],
)
def test_config_path_that_leaves_the_artifact_is_blocked(
    class_name: str, field: str, path: str, tmp_path: Path
) -> None:
    report = scan_path(builders.keras3_archive(tmp_path, [_layer(class_name, {"name": "l", field: path})], "p.keras"))
    assert_fails_with(report, "keras.external-file")


def test_lookup_vocabulary_given_inline_or_relative_does_not_block(tmp_path: Path) -> None:
    layers = [
        _layer("StringLookup", {"name": "inline", "vocabulary": ["a", "b"]}),
        _layer("StringLookup", {"name": "relative", "vocabulary": "vocab.txt"}),
        _layer("Dense", {"name": "dense_1", "units": 2}),
    ]
    report = scan_path(builders.keras3_archive(tmp_path, layers, "lookup.keras"))
    assert_passes(report)
    assert [f.evidence for f in report.findings if f.rule_id == "keras.external-file"] == ["StringLookup.vocabulary"]


def test_deserialised_field_is_scanned_as_a_nested_file_and_never_echoed(tmp_path: Path) -> None:
    import base64  # noqa: PLC0415
    import pickle  # noqa: PLC0415

    benign = base64.b64encode(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)).decode()
    payload = base64.b64encode(b"cposix\nsystem\n(Vtrue\ntR.").decode()
    for name, module, blocked in (("benign.keras", benign, False), ("evil.keras", payload, True)):
        folder = tmp_path / name
        folder.mkdir()
        layer = _layer("TorchModuleWrapper", {"name": "wrap", "module": module})
        report = scan_path(builders.keras3_archive(folder, [layer], name))
        assert all(module not in f.message and module not in f.evidence for f in report.findings)
        assert "keras.deserialised-field" in {f.rule_id for f in report.findings}
        if blocked:
            assert_fails_with(report, "pickle.dangerous-global")
        else:
            assert_passes(report)


def test_layer_names_that_only_look_like_paths_pass(tmp_path: Path) -> None:
    layers = [_layer("Dense", {"name": name, "units": 2}) for name in ("x:0", "block..1", "dense_2")]
    report = scan_path(builders.keras3_archive(tmp_path, layers, "names.keras"))
    assert_passes(report)
    assert "keras.path-traversal" not in {f.rule_id for f in report.findings}
