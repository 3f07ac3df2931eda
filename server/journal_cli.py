"""`hotline journal verify|export`: check or dump a gateway journal, offline."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from google.protobuf import json_format

from certs.errors import CertsError
from certs.pki import PartyPaths, load_certificate
from hotline.journal_file import JournalFileError, JournalReader, Kind, journal_location, redact
from hotline.journal_verify import (
    VerifyReport,
    check_index,
    check_peer_holds,
    check_witnessed,
    journal_party,
    verify_journal,
)
from hotline.v1 import common_pb2, envelope_pb2, peer_link_pb2

VERIFY_EPILOG = """\
Checks, in order: the hash chain (every entry links to the one before and is unaltered), every
signature (envelopes, receipts, checkpoints) against signing certificates that chain to the
given CAs, and the index tables operators are served from (messages, settlements, batch
receipts), recomputed from the chain: every row that disagrees is listed. With --peer-journal,
also that the checkpoints each side witnessed of the other match the other journal, and that
each journal holds everything the other holds of it (our signed messages the peer received,
our batch receipts it was given): a journal that was reset, truncated or replaced is found
even if no checkpoint was ever exchanged. Prints what is wrong and exits 1 if anything is.
Run it on a stopped gateway's journal for the index check (a live one may commit between
reads and show a row out of step).

Examples:
  hotline journal verify jp.db --ca pki/jp/ca.crt --ca pki/tw/ca.crt
  hotline journal verify jp.db --pki pki --peer-journal tw.db
  hotline journal verify 'postgresql://hotline@db1/jp' --pki pki --peer-journal tw.db
"""


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify",
        help="recompute the chain, signatures and witnessed checkpoints",
        description="Verify a journal offline.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "path", type=journal_location, help="the journal: a SQLite file or a postgresql:// URL"
    )
    verify.add_argument(
        "--ca", type=Path, action="append", default=[], help="a party's CA certificate (give both)"
    )
    verify.add_argument(
        "--pki", type=Path, help="a `hotline certs init` folder: take both CAs from it"
    )
    verify.add_argument(
        "--peer-journal",
        type=journal_location,
        help="the other party's journal (file or URL), to cross-check checkpoints",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=run_verify)
    export = sub.add_parser(
        "export",
        help="write every entry as JSON lines",
        description="Write every journal entry as one JSON object per line (signed payloads decoded).",
    )
    export.add_argument(
        "path", type=journal_location, help="the journal: a SQLite file or a postgresql:// URL"
    )
    export.add_argument("--output", "-o", type=Path, help="write here instead of standard output")
    export.set_defaults(func=run_export)


def _cas(args: argparse.Namespace, party: str) -> list[object]:
    paths = list(args.ca)
    if args.pki is not None:
        own = PartyPaths.of(args.pki, party)
        paths += [own.ca_cert, own.peer_ca_cert]
    if not paths:
        raise CertsError(
            "give the two CA certificates with --ca (twice) or a PKI folder with --pki"
        )
    return [load_certificate(p) for p in paths]


def run_verify(args: argparse.Namespace) -> int:
    try:
        party = journal_party(args.path)
        cas = _cas(args, party)
    except (CertsError, ValueError, OSError) as exc:
        print(f"hotline journal verify: error: {exc}", file=sys.stderr)
        return 2
    report = verify_journal(args.path, cas)  # type: ignore[arg-type]
    peer_report = None
    if args.peer_journal is not None:
        peer_report = verify_journal(args.peer_journal, cas)  # type: ignore[arg-type]
        # What each holds of the other first (it names the messages lost, and needs no
        # checkpoint), each only against a journal whose signatures verified.
        if peer_report.ok:
            check_peer_holds(report, args.peer_journal)
        if report.ok:
            check_peer_holds(peer_report, args.path)
        check_witnessed(report, args.peer_journal)
        if peer_report.ok:
            check_witnessed(peer_report, args.path)
    reports = [r for r in (report, peer_report) if r is not None]
    for r in reports:
        check_index(r, cas)  # type: ignore[arg-type]
    if args.json:
        print(json.dumps([_as_json(r) for r in reports], indent=2))
    else:
        for r in reports:
            verdict = "OK" if r.ok else "BAD"
            print(
                f"{redact(str(r.path))}: {verdict} party {r.party}: {r.entries} entries, "
                f"{r.signatures_checked} signatures, {r.checkpoints_matched} witnessed checkpoints; head {r.head_hash[:16]}"
            )
            if r.problem and r.first_bad is not None:
                print(f"  first bad entry: {r.first_bad}: {r.problem}")
            elif r.problem:
                print(f"  {r.problem}")
            if r.index_rows_checked or r.index_problems:
                verdict = "BAD" if r.index_problems else "OK"
                print(f"  index tables: {verdict}: {r.index_rows_checked} rows recomputed")
            for line in r.index_problems:
                print(f"  index: {line}")
            if r.index_problems_more:
                print(f"  index: ... and {r.index_problems_more} more rows that disagree")
    return 0 if all(r.ok for r in reports) else 1


def _as_json(report: VerifyReport) -> dict[str, object]:
    return {
        "path": redact(str(report.path)),
        "party": report.party,
        "ok": report.ok,
        "entries": report.entries,
        "head_hash": report.head_hash,
        "signatures_checked": report.signatures_checked,
        "checkpoints_matched": report.checkpoints_matched,
        "kinds": report.kinds,
        "first_bad": report.first_bad,
        "problem": report.problem,
        "index_rows_checked": report.index_rows_checked,
        "index_problems": report.index_problems,
        "index_problems_more": report.index_problems_more,
    }


def _decode(kind: Kind, body: bytes) -> object:
    if kind in (
        Kind.MESSAGE_OUT,
        Kind.MESSAGE_IN,
        Kind.RECEIPT,
        Kind.CHECKPOINT_OWN,
        Kind.CHECKPOINT_PEER,
    ):
        signed = common_pb2.SignedPayload()
        signed.ParseFromString(body)
        inner = {
            Kind.MESSAGE_OUT: envelope_pb2.Envelope,
            Kind.MESSAGE_IN: envelope_pb2.Envelope,
            Kind.RECEIPT: peer_link_pb2.BatchReceiptBody,
            Kind.CHECKPOINT_OWN: peer_link_pb2.CheckpointBody,
            Kind.CHECKPOINT_PEER: peer_link_pb2.CheckpointBody,
        }[kind]()
        inner.ParseFromString(signed.payload)
        return {
            "payload": json_format.MessageToDict(inner),
            "payload_type": signed.payload_type,
            "key_id": signed.key_id,
            "signature": base64.b64encode(signed.signature).decode(),
            "payload_b64": base64.b64encode(signed.payload).decode(),
        }
    if kind is Kind.KEY:
        return {"certificate_der_b64": base64.b64encode(body).decode()}
    return json.loads(body)


def run_export(args: argparse.Namespace) -> int:
    try:
        journal = JournalReader(args.path)
        journal.party()  # a journal at all, before any output
    except JournalFileError as exc:
        print(f"hotline journal export: error: {exc}", file=sys.stderr)
        return 2
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        for e in journal.entries():
            line = {
                "position": e.position,
                "kind": e.kind.value,
                "time_ns": e.time_ns,
                "message_id": e.message_id,
                "party": e.party,
                "sequence": e.sequence,
                "body": _decode(e.kind, e.body),
                "prev_hash": e.prev_hash.hex(),
                "hash": e.hash.hex(),
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    finally:
        journal.close()
        if out is not sys.stdout:
            out.close()
    return 0
