"""Generate the readable specification and the constraint table from `proto/hotline/v1/*.proto`.

Usage: python proto/specdoc.py [--out DIR]

Runs protoc (from grpc_tools) with `--include_source_info` to read every comment of the
specification, then writes, under DIR (default: `proto/`):

* `SPEC.md`: the reference for readers: introduction, the acknowledgement ladder and the peer link
  rules (with sequence diagrams), the conventions and the constraint grammar, then per file its
  services and RPCs, messages (as tables with each field's constraints) and enums;
* `hotline/constraints.py`: every `Constraints:` line, verbatim, keyed by the full name of its
  field or message: the table `hotline.validation` compiles.

It is also the specification's linter: it fails, writing nothing, if a field lacks its
`Constraints:` line, a line breaks the grammar of common.proto, or a line names a field, oneof or
enum value that does not exist. Both outputs are committed; `tests/protocol/test_generated_code.py`
regenerates them into a temporary directory and fails on any difference. `make gen` runs
`proto/generate.py` (the Python code, which this script's checks import) and then this script.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

from hotline import must_index

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = "hotline.v1"
# Reading order: vocabulary, envelope, bodies, then the two services.
FILE_ORDER = ("common.proto", "envelope.proto", "bodies.proto", "peer_link.proto", "operator.proto")
CONSTRAINTS_PREFIX = "Constraints: "

# FileDescriptorProto / DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto field
# numbers, as used in SourceCodeInfo.Location.path.
_MESSAGE_TYPE, _ENUM_TYPE, _SERVICE, _SYNTAX = 4, 5, 6, 12
_FIELD, _NESTED_TYPE, _NESTED_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_METHOD = 2

_SCALAR_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


class SpecError(Exception):
    """The specification's comments are incomplete or break the constraint grammar."""


# ---------------------------------------------------------------------------------------------
# Reading the specification
# ---------------------------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    full_name: str
    number: int
    type_name: str  # scalar name, or the full name of a message or enum without leading dot
    label: str  # "", "repeated", "optional" or "oneof <name>"
    description: list[str]
    constraints: str  # without the prefix and the final period


@dataclass
class Message:
    name: str
    full_name: str
    line: int
    description: list[str]
    rules: str  # without the prefix and the final period; "" when the message has none
    fields: list[Field] = field(default_factory=list)
    reserved: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges

    @property
    def next_free(self) -> int:
        """The number a new field takes: one past every field and reserved number."""
        used = [f.number for f in self.fields] + [high for _, high in self.reserved]
        return max(used, default=0) + 1


@dataclass
class EnumValue:
    name: str
    number: int
    description: list[str]


@dataclass
class Enum:
    name: str
    full_name: str
    line: int
    description: list[str]
    values: list[EnumValue] = field(default_factory=list)
    reserved: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges

    @property
    def next_free(self) -> int:
        used = [v.number for v in self.values] + [high for _, high in self.reserved]
        return max(used, default=0) + 1


@dataclass
class Method:
    name: str
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool
    description: list[str]


@dataclass
class Service:
    name: str
    full_name: str
    description: list[str]
    methods: list[Method] = field(default_factory=list)


@dataclass
class ProtoFile:
    name: str  # hotline/v1/common.proto
    comment: list[str]
    messages: list[Message] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)


def load_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Compile the specification with protoc, keeping the comments."""
    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    sources = [f"hotline/v1/{name}" for name in FILE_ORDER]
    missing = [s for s in sources if not (PROTO_ROOT / s).is_file()]
    found = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "hotline" / "v1").glob("*.proto")
    )
    if missing or found != sorted(sources):
        raise SpecError(f"expected exactly {sources} under proto/, found {found}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hotline.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ]
        cwd = os.getcwd()
        os.chdir(PROTO_ROOT)  # protoc resolves relative source names against the include path
        try:
            code = protoc.main(args)
        finally:
            os.chdir(cwd)
        if code != 0:
            raise SpecError(f"protoc failed with exit code {code}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment_lines(text: str) -> list[str]:
    """A protoc comment as lines, without the one space after `//`, trailing blanks dropped."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _split_constraints(
    lines: list[str], where: str, errors: list[str], *, required: bool
) -> tuple[list[str], str]:
    """Separate a comment's final `Constraints:` line from its description."""
    if lines and lines[-1].startswith(CONSTRAINTS_PREFIX):
        text = lines[-1].removeprefix(CONSTRAINTS_PREFIX)
        if not text.endswith("."):
            errors.append(f"{where}: the Constraints line must end with '.'")
        return lines[:-1], text.removesuffix(".")
    if any(line.startswith(CONSTRAINTS_PREFIX.strip()) for line in lines):
        errors.append(f"{where}: the Constraints line must be the last line of the comment")
    elif required:
        errors.append(f"{where}: the comment must end with a Constraints line")
    return lines, ""


class _FileReader:
    """Reads one file's descriptors and comments into a `ProtoFile`."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto, errors: list[str]) -> None:
        self.file = file
        self.errors = errors
        self.locations = {tuple(loc.path): loc for loc in file.source_code_info.location}

    def comment(self, path: tuple[int, ...]) -> list[str]:
        loc = self.locations.get(path)
        return _comment_lines(loc.leading_comments) if loc is not None else []

    def line(self, path: tuple[int, ...]) -> int:
        loc = self.locations.get(path)
        return loc.span[0] + 1 if loc is not None else 0

    def read(self) -> ProtoFile:
        file = self.file
        syntax = self.locations.get((_SYNTAX,))
        header = []
        if syntax is not None and syntax.leading_detached_comments:
            header = _comment_lines(syntax.leading_detached_comments[0])
        if not header:
            self.errors.append(f"{file.name}: no file comment before `syntax`")
        proto = ProtoFile(file.name, header)
        for i, msg in enumerate(file.message_type):
            self.message(proto, msg, (_MESSAGE_TYPE, i), file.package)
        for i, enum in enumerate(file.enum_type):
            self.enum(proto, enum, (_ENUM_TYPE, i), file.package)
        for i, svc in enumerate(file.service):
            service = Service(svc.name, f"{file.package}.{svc.name}", self.comment((_SERVICE, i)))
            for j, method in enumerate(svc.method):
                service.methods.append(
                    Method(
                        method.name,
                        method.input_type.lstrip("."),
                        method.output_type.lstrip("."),
                        method.client_streaming,
                        method.server_streaming,
                        self.comment((_SERVICE, i, _METHOD, j)),
                    )
                )
            proto.services.append(service)
        proto.messages.sort(key=lambda m: m.line)
        proto.enums.sort(key=lambda e: e.line)
        return proto

    def enum(
        self,
        proto: ProtoFile,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        scope: str,
    ) -> None:
        item = Enum(enum.name, f"{scope}.{enum.name}", self.line(path), self.comment(path))
        item.reserved = [(r.start, r.end) for r in enum.reserved_range]  # end inclusive here
        for j, value in enumerate(enum.value):
            item.values.append(
                EnumValue(value.name, value.number, self.comment((*path, _ENUM_VALUE, j)))
            )
        proto.enums.append(item)

    def message(
        self,
        proto: ProtoFile,
        msg: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        scope: str,
    ) -> None:
        full = f"{scope}.{msg.name}"
        where = f"{proto.name}:{self.line(path)}: message {full}"
        description, rules = _split_constraints(
            self.comment(path), where, self.errors, required=False
        )
        item = Message(msg.name, full, self.line(path), description, rules)
        item.reserved = [(r.start, r.end - 1) for r in msg.reserved_range]  # end exclusive here
        for j, fd in enumerate(msg.field):
            field_path = (*path, _FIELD, j)
            field_where = f"{proto.name}:{self.line(field_path)}: field {full}.{fd.name}"
            field_description, constraints = _split_constraints(
                self.comment(field_path), field_where, self.errors, required=True
            )
            if fd.type in (fd.TYPE_MESSAGE, fd.TYPE_ENUM):
                type_name = fd.type_name.lstrip(".")
            else:
                type_name = _SCALAR_NAMES[fd.type]
            if fd.label == fd.LABEL_REPEATED:
                label = "repeated"
            elif fd.proto3_optional:
                label = "optional"
            elif fd.HasField("oneof_index"):
                label = f"oneof {msg.oneof_decl[fd.oneof_index].name}"
            else:
                label = ""
            item.fields.append(
                Field(
                    fd.name,
                    f"{full}.{fd.name}",
                    fd.number,
                    type_name,
                    label,
                    field_description,
                    constraints,
                )
            )
        proto.messages.append(item)
        for k, nested in enumerate(msg.nested_type):
            self.message(proto, nested, (*path, _NESTED_TYPE, k), full)
        for k, nested_enum in enumerate(msg.enum_type):
            self.enum(proto, nested_enum, (*path, _NESTED_ENUM, k), full)


def read_spec(fds: descriptor_pb2.FileDescriptorSet) -> tuple[list[ProtoFile], list[str]]:
    """Turn the descriptors and their comments into the model this script renders."""
    errors: list[str] = []
    files = {
        f.name: _FileReader(f, errors).read() for f in fds.file if f.name.startswith("hotline/")
    }
    ordered = [files[f"hotline/v1/{name}"] for name in FILE_ORDER if f"hotline/v1/{name}" in files]
    return ordered, errors


def constraint_tables(files: Iterable[ProtoFile]) -> tuple[dict[str, str], dict[str, str]]:
    """The `Constraints:` lines: by field full name, and by message full name (rules only)."""
    fields: dict[str, str] = {}
    messages: dict[str, str] = {}
    for proto in files:
        for msg in proto.messages:
            if msg.rules:
                messages[msg.full_name] = msg.rules
            for fd in msg.fields:
                fields[fd.full_name] = fd.constraints
    return fields, messages


def check_constraints(files: list[ProtoFile]) -> list[str]:
    """Parse every Constraints line and compile the whole table against the descriptors."""
    from hotline import validation

    errors: list[str] = []
    for proto in files:
        for msg in proto.messages:
            try:
                validation.parse_message_constraints(msg.rules)
            except validation.ConstraintSyntaxError as exc:
                errors.append(f"{proto.name}:{msg.line}: message {msg.full_name}: {exc}")
            for fd in msg.fields:
                try:
                    validation.parse_field_constraints(fd.constraints)
                except validation.ConstraintSyntaxError as exc:
                    errors.append(f"{proto.name}: field {fd.full_name}: {exc}")
    if not errors:
        fields, messages = constraint_tables(files)
        errors.extend(validation.check_constraint_table(fields, messages))
    return errors


# ---------------------------------------------------------------------------------------------
# constraints.py
# ---------------------------------------------------------------------------------------------

_CONSTRAINTS_HEADER = '''\
"""The constraint table of the Hotline specification. GENERATED by proto/specdoc.py: do not edit.

Every `Constraints:` line of `proto/hotline/v1/*.proto`, verbatim without the `Constraints: `
prefix and the final period, keyed by the full name of its field (`FIELDS`) or, for rules that
relate several fields, of its message (`MESSAGES`). The grammar is defined in the header comment
of common.proto; `hotline.validation` parses and compiles this table. Change the `.proto`
comments and run `make gen`.
"""

from typing import Final

'''


def _py_string(text: str) -> str:
    """A Python string literal, quoted as ruff format prefers."""
    body = text.replace("\\", "\\\\")
    if '"' in text and "'" not in text:
        return f"'{body}'"
    return '"' + body.replace('"', '\\"') + '"'


def render_constraints(files: list[ProtoFile]) -> str:
    fields, messages = constraint_tables(files)
    out = [_CONSTRAINTS_HEADER]
    out.append("# Field full name -> the field's constraints.\n")
    out.append("FIELDS: Final[dict[str, str]] = {\n")
    out.extend(f"    {_py_string(name)}: {_py_string(text)},\n" for name, text in fields.items())
    out.append("}\n\n")
    out.append("# Message full name -> the rules that relate several of its fields.\n")
    out.append("MESSAGES: Final[dict[str, str]] = {\n")
    out.extend(f"    {_py_string(name)}: {_py_string(text)},\n" for name, text in messages.items())
    out.append("}\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# SPEC.md
# ---------------------------------------------------------------------------------------------


def _escape_inline(text: str) -> str:
    """Escape `<` outside code spans, so that `<path>` is shown and not taken for HTML."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[i])
    return "`".join(parts)


def md_cell(lines: list[str]) -> str:
    """A comment as one table cell: paragraphs joined with line breaks."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if not line.strip():
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.strip())
    text = "<br><br>".join(_escape_inline(" ".join(p)) for p in paragraphs if p)
    return text.replace("|", "\\|")


def md_block(lines: list[str], level: int) -> str:
    """A comment as Markdown: underlined titles become headings, indented blocks code blocks."""
    out: list[str] = []
    i, n = 0, len(lines)
    previous = ""
    in_bullet = False
    while i < n:
        line = lines[i]
        if not line.strip():
            out.append("")
            previous, in_bullet = "", False
            i += 1
            continue
        following = lines[i + 1].strip() if i + 1 < n else ""
        if len(following) >= 3 and re.fullmatch(r"=+|-+", following):
            out.extend([f"{'#' * level} {line.strip()}", ""])
            previous, in_bullet = "", False
            i += 2
            continue
        indented = line.startswith("  ")
        if indented and not in_bullet and (not previous or previous.endswith(":")):
            block: list[str] = []
            while i < n and (lines[i].startswith("  ") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
            out.extend(["", "```text", *(b[indent:] for b in block), "```", ""])
            previous = ""
            continue
        if line.startswith("* "):
            in_bullet = True
            out.append(_escape_inline(line))
        elif in_bullet and indented:
            out.append("  " + _escape_inline(line.strip()))  # a list item's continuation
        else:
            in_bullet = False
            out.append(_escape_inline(line.strip()))
        previous = line.strip()
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _type_link(type_name: str, known: set[str]) -> str:
    if type_name in known:
        return f"[`{type_name.removeprefix(PACKAGE + '.')}`](#{type_name})"
    return f"`{type_name}`"


_DEADLINE_RE = re.compile(r"Default acknowledgement deadline (\d+ (?:minutes?|hours?))\.")


def default_deadlines(files: list[ProtoFile]) -> list[tuple[EnumValue, str, str]]:
    """(value, deadline, meaning) for each precedence, from the comments of `Precedence`."""
    precedence = next(e for p in files for e in p.enums if e.full_name == f"{PACKAGE}.Precedence")
    rows = []
    for value in precedence.values:
        if value.number == 0:
            continue
        text = " ".join(value.description)
        match = _DEADLINE_RE.search(text)
        if not match:
            raise SpecError(
                f"{value.name}: its comment does not state 'Default acknowledgement deadline N minutes|hours.'"
            )
        rows.append((value, match[1], _DEADLINE_RE.sub("", text).strip()))
    return rows


_DEADLINES_INTRO = """\
Each precedence sets an acknowledgement deadline, measured from the time the sending gateway
journals the message. Past it, an unacknowledged message raises `EVENT_KIND_ESCALATION` at the
sender and `EVENT_KIND_REALERT` at the receiver. The defaults below (after ACP 121 handling
times) are configurable per gateway; the two parties should agree them.
"""

_LINK_DIAGRAM = """\
The same conversation as a sequence diagram, continued across a reconnect:

```mermaid
sequenceDiagram
    participant S as Sender gateway (JP)
    participant R as Receiver gateway (TW)
    S->>R: Push() over mutual TLS (peer JP gateway only)
    S->>R: Hello(party JP, last_receipted_sequence 41, nonce N)
    R-->>S: Welcome(signed by TW over N: last_sequence 43; batch receipts for 42 and 43)
    Note left of S: verify the Welcome before sending anything
    S->>R: Checkpoint(JP journal, 1200 entries, head hash)
    Note right of R: verify, compare with the checkpoints witnessed, journal
    S->>R: DeliveryBatch(44 FLASH, 45 ROUTINE, 46 ROUTINE)
    S->>R: DeliveryBatch(47 ROUTINE)
    Note right of R: verify, parse, validate each in sequence order; one commit per batch
    R-->>S: BatchReceipt(44..46: 44 and 46 receipted, 45 INVALID_MESSAGE), signed by TW, once durable
    R-->>S: BatchReceipt(47 receipted), signed by TW, once durable
    S->>R: Ping(nonce 7, t1)
    R-->>S: Pong(nonce 7, t1, t2, t3), at once
    S->>R: Checkpoint(JP journal, 1214 entries, head hash), every 60 s
    Note over S,R: no frame for 3 heartbeat intervals - link down
    S->>R: Push() again, after jittered exponential backoff
    S->>R: Hello(party JP, last_receipted_sequence 47, nonce M)
    R-->>S: Welcome(signed by TW over M: last_sequence 47)
    S->>R: DeliveryBatch(48, next messages in precedence order)
```
"""


def _anchor(name: str) -> str:
    return f'<a id="{name}"></a>'


# The chapters of SPEC.md, in reading order: (anchor, title, hand-written file in proto/spec/
# or "" for a chapter generated from the .proto comments).
CHAPTERS: tuple[tuple[str, str, str], ...] = (
    ("overview", "Overview", "overview.md"),
    ("identities", "Identities and roles", "identities.md"),
    ("ladder", "The acknowledgement ladder", "ladder.md"),
    ("catalogue", "Message catalogue", "catalogue.md"),
    ("states", "State diagrams", "states.md"),
    ("peer-link", "The peer link", ""),
    ("journal-chain", "The journal's hash chain", "journal.md"),
    ("conventions", "Conventions and field constraints", ""),
    ("versioning", "Versioning and evolution", "versioning.md"),
    ("threat-model", "Threat model", "threat-model.md"),
    ("vectors", "Test vectors", "vectors.md"),
    ("must-index", "MUST index", ""),
    ("reference", "Reference", ""),
)
PROSE_ROOT = PROTO_ROOT / "spec"


def prose(name: str) -> str:
    """A hand-written chapter."""
    path = PROSE_ROOT / name
    if not path.is_file():
        raise SpecError(f"proto/spec/{name} is missing")
    return path.read_text(encoding="utf-8").strip("\n")


def must_sources(files: list[ProtoFile]) -> list[must_index.Source]:
    """Every text of the specification that may hold a MUST, with where SPEC.md renders it."""
    sources: list[must_index.Source] = []
    for anchor, title, name in CHAPTERS:
        if name:
            text = tuple(prose(name).split("\n"))
            sources.append(must_index.Source(text, title, anchor, f"proto/spec/{name}"))
    for proto in files:
        stem = Path(proto.name).stem
        anchor = {"peer_link": "peer-link", "common": "conventions"}.get(stem, f"file-{stem}")
        sources.append(must_index.Source(tuple(proto.comment), proto.name, anchor, proto.name))
        for service in proto.services:
            texts = [(service.full_name, service.description)]
            texts += [(f"{service.full_name}.{m.name}", m.description) for m in service.methods]
            for full, lines in texts:
                sources.append(must_index.Source(tuple(lines), full, full, proto.name))
        for msg in proto.messages:
            sources.append(
                must_index.Source(tuple(msg.description), msg.full_name, msg.full_name, proto.name)
            )
            for fd in msg.fields:
                sources.append(
                    must_index.Source(
                        tuple(fd.description), fd.full_name, msg.full_name, proto.name
                    )
                )
        for enum in proto.enums:
            sources.append(
                must_index.Source(
                    tuple(enum.description), enum.full_name, enum.full_name, proto.name
                )
            )
            for value in enum.values:
                sources.append(
                    must_index.Source(
                        tuple(value.description), value.name, enum.full_name, proto.name
                    )
                )
    return sources


_TAG_OUTSIDE_CODE = re.compile(r"(?<![`\w])\[(" + must_index.ID_PATTERN + r")\](?!\()")


def _link_tags(markdown: str) -> str:
    """Make every MUST id outside code an anchor the index links to."""
    out: list[str] = []
    fenced = False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and "[" in line:
            parts = line.split("`")
            for i in range(0, len(parts), 2):
                parts[i] = _TAG_OUTSIDE_CODE.sub(
                    lambda m: f'<a id="must-{m[1]}"></a>**[{m[1]}]**', parts[i]
                )
            line = "`".join(parts)
        out.append(line)
    return "\n".join(out)


def _constraint_list(fields: list[Field]) -> list[str]:
    """The fields' Constraints lines, one bullet each, below the table (long patterns would
    make the table too wide to read)."""
    out = ["**Constraints:**\n"]
    for fd in fields:
        out.append(f"- `{fd.name}`: `{fd.constraints}`")
    out.append("")
    return out


def render_spec(files: list[ProtoFile], musts: list[must_index.Must]) -> str:
    known = {m.full_name for p in files for m in p.messages} | {
        e.full_name for p in files for e in p.enums
    }
    n_messages = sum(len(p.messages) for p in files)
    n_enums = sum(len(p.enums) for p in files)
    n_services = sum(len(p.services) for p in files)
    n_rpcs = sum(len(s.methods) for p in files for s in p.services)
    n_fields = sum(len(m.fields) for p in files for m in p.messages)
    n_rules = sum(len(m.rules.split("; ")) for p in files for m in p.messages if m.rules)
    by_name = {p.name.removeprefix("hotline/v1/"): p for p in files}

    out: list[str] = []
    add = out.append
    add("# Hotline protocol `hotline.v1` (link protocol version 2): specification\n")
    add(
        "<!-- GENERATED by proto/specdoc.py from proto/hotline/v1/*.proto and proto/spec/*.md: "
        "do not edit. Change the .proto comments or the chapters and run `make gen`. -->\n"
    )
    add(
        f"Package `{PACKAGE}`: {len(files)} files, {n_services} services with {n_rpcs} RPCs, "
        f"{n_messages} messages with {n_fields} fields, {n_enums} enums, "
        f"{n_rules} message-level rules, and {len(musts)} MUSTs.\n"
    )
    add("## Contents\n")
    for number, (anchor, title, _) in enumerate(CHAPTERS, 1):
        add(f"{number}. [{title}](#{anchor})")
        if anchor == "reference":
            for i, proto in enumerate(files, 1):
                add(f"   {i}. [`{proto.name}`](#file-{Path(proto.name).stem})")
    add("")

    for number, (anchor, title, name) in enumerate(CHAPTERS, 1):
        add(f"{_anchor(anchor)}\n\n## {number}. {title}\n")
        if name:
            add(prose(name) + "\n")
        if anchor == "overview":
            add("| File | Holds | Services | Messages | Enums |")
            add("|---|---|---|---|---|")
            for proto in files:
                summary = proto.comment[0].split(": ", 1)[-1].rstrip(".") if proto.comment else ""
                add(
                    f"| [`{proto.name}`](#file-{Path(proto.name).stem}) | {md_cell([summary])} | "
                    f"{len(proto.services)} | {len(proto.messages)} | {len(proto.enums)} |"
                )
            add("")
        elif anchor == "ladder":
            _render_ladder_tables(files, add)
        elif anchor == "peer-link":
            add(
                "The normative rules of `PeerLinkService`, from the file comment of `peer_link.proto`.\n"
            )
            if "peer_link.proto" in by_name:
                add(md_block(by_name["peer_link.proto"].comment, 3) + "\n")
            add(_LINK_DIAGRAM)
        elif anchor == "conventions":
            add("From the file comment of `common.proto`.\n")
            if "common.proto" in by_name:
                add(md_block(by_name["common.proto"].comment, 3) + "\n")
        elif anchor == "versioning":
            _render_next_free(files, add)
        elif anchor == "must-index":
            _render_must_index(musts, add)
        elif anchor == "reference":
            _render_reference(files, known, add)
    return _link_tags("\n".join(out).rstrip("\n") + "\n")


def _render_ladder_tables(files: list[ProtoFile], add: Callable[[str], None]) -> None:
    delivery_state = next(
        (e for p in files for e in p.enums if e.full_name == f"{PACKAGE}.DeliveryState"), None
    )
    if delivery_state is not None:
        add(f"The states, as [`DeliveryState`](#{delivery_state.full_name}) reports them:\n")
        add(md_block(delivery_state.description, 4) + "\n")
        add("| State | Meaning |")
        add("|---|---|")
        for value in delivery_state.values:
            add(f"| `{value.name}` | {md_cell(value.description)} |")
        add("")
    add("### Default acknowledgement deadlines\n")
    add(_DEADLINES_INTRO)
    add("| Precedence | Number | Default deadline | Use |")
    add("|---|---|---|---|")
    for value, deadline, meaning in default_deadlines(files):
        add(f"| `{value.name}` | {value.number} | {deadline} | {md_cell([meaning])} |")
    add("")


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges) or "none"


def _render_next_free(files: list[ProtoFile], add: Callable[[str], None]) -> None:
    add("| Message or enum | Numbers in use | Reserved | Next free |")
    add("|---|---|---|---|")
    for proto in files:
        for msg in proto.messages:
            used = _ranges(_compress(sorted(f.number for f in msg.fields)))
            add(
                f"| [`{msg.full_name.removeprefix(PACKAGE + '.')}`](#{msg.full_name}) | {used} | "
                f"{_ranges(msg.reserved)} | {msg.next_free} |"
            )
        for enum in proto.enums:
            used = _ranges(_compress(sorted(v.number for v in enum.values)))
            add(
                f"| [`{enum.full_name.removeprefix(PACKAGE + '.')}`](#{enum.full_name}) (enum) | "
                f"{used} | {_ranges(enum.reserved)} | {enum.next_free} |"
            )
    add("")


def _compress(numbers: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for n in numbers:
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def _render_must_index(musts: list[must_index.Must], add: Callable[[str], None]) -> None:
    add(
        "Every MUST and MUST NOT of this specification, by id, in document order. The same list "
        "is in `proto/hotline/must_index.json` (generated with this document); each id is named "
        "by the tests that check it (`@pytest.mark.must(...)`), and "
        "`tests/protocol/test_must_index.py` fails when one is not.\n"
    )
    add("| Id | Requirement | Section |")
    add("|---|---|---|")
    for must in musts:
        statement = md_cell([must.statement])
        statement = re.sub(r"\[" + must_index.ID_PATTERN + r"\]$", "", statement).rstrip()
        add(f"| [{must.id}](#must-{must.id}) | {statement} | [{must.section}](#{must.anchor}) |")
    add("")


def _render_reference(files: list[ProtoFile], known: set[str], add: Callable[[str], None]) -> None:
    add(
        "Per file: its services and RPCs, messages and enums. In the tables, **Type** shows "
        "`repeated`, `optional` (explicit presence) or the oneof a field belongs to; each "
        "field's `Constraints:` line follows the table, and a message's own **Rules** relate "
        "several of its fields.\n"
    )
    for proto in files:
        stem = Path(proto.name).stem
        add(f"{_anchor('file-' + stem)}\n\n### `{proto.name}`\n")
        if stem == "peer_link":
            add("The file comment is [the peer link](#peer-link).\n")
        elif stem == "common":
            add("The file comment is [conventions and field constraints](#conventions).\n")
        else:
            add(md_block(proto.comment, 4) + "\n")
        for service in proto.services:
            add(f"{_anchor(service.full_name)}\n\n#### service `{service.name}`\n")
            add(md_block(service.description, 5) + "\n")
            add("| RPC | Request | Response |")
            add("|---|---|---|")
            for method in service.methods:
                req = ("stream " if method.client_streaming else "") + _type_link(
                    method.input_type, known
                )
                resp = ("stream " if method.server_streaming else "") + _type_link(
                    method.output_type, known
                )
                add(f"| [`{method.name}`](#{service.full_name}.{method.name}) | {req} | {resp} |")
            add("")
            for method in service.methods:
                signature = (
                    f"rpc {method.name}({'stream ' if method.client_streaming else ''}"
                    f"{method.input_type.removeprefix(PACKAGE + '.')}) returns "
                    f"({'stream ' if method.server_streaming else ''}{method.output_type.removeprefix(PACKAGE + '.')})"
                )
                add(f"{_anchor(service.full_name + '.' + method.name)}\n\n##### `{method.name}`\n")
                add(f"```proto\n{signature};\n```\n")
                add(md_block(method.description, 6) + "\n")
        items: list[tuple[int, Message | Enum]] = [(m.line, m) for m in proto.messages]
        items += [(e.line, e) for e in proto.enums]
        for _, item in sorted(items, key=lambda pair: pair[0]):
            if isinstance(item, Message):
                add(f"{_anchor(item.full_name)}\n\n#### message `{item.name}`\n")
                if item.description:
                    add(md_block(item.description, 5) + "\n")
                if item.rules:
                    add("**Rules:**\n")
                    for rule in item.rules.split("; "):
                        add(f"- `{rule}`")
                    add("")
                if not item.fields:
                    add("No fields.\n")
                    continue
                add("| Field | No. | Type | Description |")
                add("|---|---|---|---|")
                for fd in item.fields:
                    type_cell = _type_link(fd.type_name, known)
                    if fd.label:
                        type_cell = f"`{fd.label}` {type_cell}"
                    add(f"| `{fd.name}` | {fd.number} | {type_cell} | {md_cell(fd.description)} |")
                add("")
                for line in _constraint_list(item.fields):
                    add(line)
            else:
                add(f"{_anchor(item.full_name)}\n\n#### enum `{item.name}`\n")
                if item.description:
                    add(md_block(item.description, 5) + "\n")
                add("| Value | No. | Description |")
                add("|---|---|---|")
                for value in item.values:
                    add(f"| `{value.name}` | {value.number} | {md_cell(value.description)} |")
                add("")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build() -> tuple[str, str, str]:
    """Read and check the specification; return (SPEC.md, constraints.py, must_index.json).
    Raises SpecError."""
    files, errors = read_spec(load_descriptor_set())
    if not errors:
        errors = check_constraints(files)
    musts: list[must_index.Must] = []
    if not errors:
        musts, errors = must_index.extract(must_sources(files))
    if errors:
        raise SpecError("the specification has problems:\n  " + "\n  ".join(errors))
    return render_spec(files, musts), render_constraints(files), must_index.render_json(musts)


def write(out: Path) -> None:
    spec, constraints, musts = build()
    (out / "hotline").mkdir(parents=True, exist_ok=True)
    (out / "SPEC.md").write_text(spec, encoding="utf-8")
    (out / "hotline" / "constraints.py").write_text(constraints, encoding="utf-8")
    (out / "hotline" / "must_index.json").write_text(musts, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)"
    )
    args = parser.parse_args(argv)
    try:
        write(args.out)
    except SpecError as exc:
        print(f"specdoc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
