"""Text files that a loader runs: TensorFlow text-format graphs and Jinja chat templates.

`tf.saved_model.load` reads `saved_model.pbtxt` when there is no `saved_model.pb`, and
`import_meta_graph`/`GraphDef` readers accept text format too: the same PyFunc or WriteFile
op written as text must not pass as "text". transformers loads `chat_template.jinja`
(and `additional_chat_templates/*.jinja`) as the tokenizer's template, rendered like the
GGUF one. The protobuf text is tokenised as protobuf's text parser reads it (comments,
both quote styles, C escapes, adjacent literals concatenated); nothing is executed.
"""

from __future__ import annotations

import codecs
import re

from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<word>[A-Za-z_][\w.]*)|(?P<punct>[{}<>:\[\],;])|(?P<other>.)""",
    re.DOTALL,
)
_GRAPH_TEXT = re.compile(r"\b(?:node|node_def|meta_graphs|graph_def)\s*:?\s*[{<]")
_MAX_TOKENS = 20_000_000


def scan_model_text(ctx: ScanContext, text: str, loc: Location, lower_name: str) -> None:
    """Judge text that a model loader would run; do nothing for other text."""
    if lower_name.endswith(".jinja"):
        from bastion.scan.formats.jinja_template import check_template  # noqa: PLC0415  # Jinja2 only when needed

        ctx.saw("chat-template")
        check_template(ctx, text, loc, "chat-template", rule_prefix="hf-tokenizer")
    elif _GRAPH_TEXT.search(text) and re.search(r"\bop\s*:", text):
        ctx.saw("tensorflow")
        _scan_graph_text(ctx, text, loc)


def _literal(quoted: str) -> str:
    raw = quoted[1:-1].encode("utf-8", "surrogateescape")
    try:
        return codecs.escape_decode(raw)[0].decode(
            "utf-8", "replace"
        )  # C-style escapes, as protobuf's text parser reads them
    except ValueError:
        return quoted[1:-1]


def _scan_graph_text(ctx: ScanContext, text: str, loc: Location) -> None:
    from bastion.scan.formats.protobuf_models import (  # noqa: PLC0415  # one list of ops
        TF_CODE_OPS,
        TF_FILE_OPS,
        TF_REMOTE_OPS,
    )

    blocks: list[str] = []
    last_word = ""
    key = ""  # the field whose value is being read
    pending: list[str] = []  # adjacent string literals, concatenated as protobuf does
    count = 0

    def flush() -> None:
        value = "".join(pending)
        pending.clear()
        if not value or not (key == "op" or (key == "name" and blocks and blocks[-1] == "func")):
            return
        if value in TF_CODE_OPS:
            ctx.add(
                "tf.python-op",
                Severity.CRITICAL,
                loc,
                f"text-format graph runs a {value} op (Python code)",
                "tensorflow",
                value,
            )
        elif value in TF_FILE_OPS:
            ctx.add(
                "tf.file-op", Severity.HIGH, loc, f"text-format graph runs a {value} op (files)", "tensorflow", value
            )
        elif value in TF_REMOTE_OPS:
            message = f"text-format graph runs a {value} op (other processes or hosts)"
            ctx.add("tf.remote-op", Severity.HIGH, loc, message, "tensorflow", value)

    for match in _TOKEN.finditer(text):
        count += 1
        if count > _MAX_TOKENS:
            from bastion.errors import LimitExceeded  # noqa: PLC0415

            raise LimitExceeded("text-format graph has too many tokens")
        kind = match.lastgroup
        if kind is None:  # whitespace or a comment: adjacent literals may span them
            continue
        piece = match.group()
        if kind == "str":
            pending.append(_literal(piece))
            continue
        flush()
        if kind == "word":
            last_word = piece
        elif piece in "{<":
            blocks.append(last_word)
            key = ""
        elif piece in "}>":
            if blocks:
                blocks.pop()
            key = ""
        elif piece == ":":
            key = last_word
    flush()
