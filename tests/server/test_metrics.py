"""`/metrics`: scraped from real gateways after real traffic, checked against their journals.

Every counted family is a count of journal entries, so each value must equal what the journal
file holds; `promtool check metrics` (Debian's `prometheus` package, which `.ci/run` installs)
must find nothing to complain about.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certs.pki import PartyPaths
from hotline.journal_file import JournalReader, Kind
from hotline.v1 import bodies_pb2, common_pb2, operator_pb2
from server.metrics import GatewayMetrics, MetricsTls
from tests.harness import free_text, make_pki, running_pair, wait_state

PRECEDENCES = {
    common_pb2.PRECEDENCE_FLASH: 2,
    common_pb2.PRECEDENCE_IMMEDIATE: 1,
    common_pb2.PRECEDENCE_ROUTINE: 3,
}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def journal_kinds(path: Path | str) -> Counter[str]:
    with JournalReader(path) as reader:
        return Counter(e.kind.value for e in reader.entries(list(Kind)))


async def test_metrics_after_traffic_match_the_journal_and_pass_promtool(tmp_path: Path) -> None:
    async with running_pair(tmp_path, overrides={"metrics_listen": "127.0.0.1:0"}) as pair:
        assert pair.jp.gateway.metrics_port
        assert pair.tw.gateway.metrics_port
        sent = []
        for precedence, count in PRECEDENCES.items():
            for n in range(count):
                envelope = free_text(f"metrics {n}", precedence=precedence)
                await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope))
                sent.append(envelope.message_id)
        for message_id in sent:
            await wait_state(pair.jp.stub, message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        await pair.tw.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(
                message_id=sent[0],
                level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
                ack_message_id=free_text().message_id,
            )
        )
        await wait_state(pair.jp.stub, sent[0], operator_pb2.DELIVERY_STATE_ACKNOWLEDGED)
        await asyncio.sleep(0.2)  # the last commit's publication reaches the counters
        jp_text = await asyncio.to_thread(scrape, pair.jp.gateway.metrics_port)
        tw_text = await asyncio.to_thread(scrape, pair.tw.gateway.metrics_port)
        jp_journal = pair.jp.gateway.config.journal
        tw_journal = pair.tw.gateway.config.journal
        jp_kinds = journal_kinds(jp_journal)
        tw_kinds = journal_kinds(tw_journal)

    jp, tw = samples(jp_text), samples(tw_text)
    # Scraped before the journals were read: a checkpoint or link entry may have landed in
    # between, never a message (the traffic was over).
    settled = {"message-out", "message-in", "delivered", "receipt", "acknowledged", "key"}
    for metrics, kinds in ((jp, jp_kinds), (tw, tw_kinds)):
        for kind, count in kinds.items():
            counted = value(metrics, "hotline_journal_entries_total", kind=kind)
            assert counted == count if kind in settled else counted <= count, kind
    for precedence, count in PRECEDENCES.items():
        name = common_pb2.Precedence.Name(precedence).removeprefix("PRECEDENCE_")
        out = {"direction": "out", "precedence": name}
        assert value(jp, "hotline_messages_total", outcome="journaled", **out) == count
        assert value(jp, "hotline_messages_total", outcome="delivered", **out) == count
        inbound = {"direction": "in", "precedence": name, "outcome": "received"}
        assert value(tw, "hotline_messages_total", **inbound) == count
    acknowledged = {
        k: v
        for k, v in tw.items()
        if k[0] == "hotline_messages_total" and ("outcome", "acknowledged") in k[1]
    }
    assert list(acknowledged.values()) == [1.0], acknowledged
    assert value(jp, "hotline_stage_seconds_count", stage="delivered") == len(sent)
    assert value(jp, "hotline_stage_seconds_count", stage="acknowledged") == 1
    assert value(jp, "hotline_link_up", direction="out") == 1
    assert value(jp, "hotline_link_changes_total", direction="out", state="up") >= 1
    assert value(jp, "hotline_outbox_depth") == 0
    assert value(jp, "hotline_certificate_expiry_timestamp_seconds", certificate="gateway") > 0
    assert value(jp, "hotline_crl_next_update_timestamp_seconds", party="TW") > 0
    assert value(jp, "hotline_journal_commit_entries_count") >= 1
    # every durable commit timed, in two parts; at least as many as published ones
    commits = value(jp, "hotline_journal_commit_seconds_count", part="commit")
    assert commits >= value(jp, "hotline_journal_commit_entries_count")
    assert value(jp, "hotline_journal_commit_seconds_count", part="run") == commits
    assert value(jp, "hotline_journal_commit_seconds_sum", part="commit") > 0

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    for text in (jp_text, tw_text):
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert (checked.stdout + checked.stderr).strip() == "", checked.stdout + checked.stderr


async def test_a_gateway_without_metrics_listen_counts_nothing(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        envelope = free_text("not counted")
        await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope))
        await wait_state(pair.jp.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        await asyncio.sleep(0.2)  # as long as the counted test waits for the last publication
        registry = pair.jp.gateway.metrics.registry
        assert pair.jp.gateway.metrics_port == 0
        counted = registry.get_sample_value(
            "hotline_journal_entries_total", {"kind": "message-out"}
        )
        commits = registry.get_sample_value("hotline_journal_commit_entries_count")
    assert counted is None  # no journal subscriber: not even a zero was created
    assert commits == 0


def test_the_example_grafana_dashboard_uses_only_metrics_the_gateway_exports() -> None:
    dashboard = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "hotline-gateway.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in re.findall(r"hotline_[a-z_]+", expr)}
    exported = {
        sample.name for family in GatewayMetrics().registry.collect() for sample in family.samples
    } | {f"{family.name}_bucket" for family in GatewayMetrics().registry.collect()}
    exported |= {f"{f.name}_total" for f in GatewayMetrics().registry.collect()}
    exported |= {f"{f.name}_sum" for f in GatewayMetrics().registry.collect()}
    exported |= {f"{f.name}_count" for f in GatewayMetrics().registry.collect()}
    exported |= {f.name for f in GatewayMetrics().registry.collect()}
    assert used
    assert used <= exported, used - exported


def scrape_tls(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    """A scrape over HTTPS as Prometheus does it: the gateway's name checked against `ca`."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    url = f"https://localhost:{port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return str(response.read().decode())


def refused(scrape: Callable[[], str]) -> str:
    """What a scrape that must be refused failed with (the test fails if it succeeds)."""
    try:
        scrape()
    except (OSError, urllib.error.URLError) as exc:  # ssl.SSLError, reset, EOF
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("the scrape was answered")


async def test_metrics_over_mutual_tls_answer_only_a_client_certificate_of_the_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hotline.metrics")
    tls = {"metrics_listen": "127.0.0.1:0", "metrics_client_ca": "pki/jp/ca.crt"}
    async with running_pair(tmp_path, overrides=tls) as pair:
        jp = PartyPaths.of(pair.pki, "JP")
        tw = PartyPaths.of(pair.pki, "TW")
        port = pair.jp.gateway.metrics_port
        scraper = (jp.operator_cert("watch-1"), jp.operator_key("watch-1"))
        text = await asyncio.to_thread(scrape_tls, port, jp.ca_cert, *scraper)
        assert value(samples(text), "hotline_journal_entries_total", kind="key") >= 1
        # no client certificate; one from the other party's CA; plain HTTP: all refused
        errors = [
            await asyncio.to_thread(refused, lambda: scrape_tls(port, jp.ca_cert)),
            await asyncio.to_thread(
                refused,
                lambda: scrape_tls(
                    port, jp.ca_cert, tw.operator_cert("watch-1"), tw.operator_key("watch-1")
                ),
            ),
            await asyncio.to_thread(refused, lambda: scrape(port)),
        ]
        # still serving the scraper after the refusals
        assert "hotline_link_up" in await asyncio.to_thread(scrape_tls, port, jp.ca_cert, *scraper)
    assert len(errors) == 3
    # the gateway's side says why, in words (the client may see only an EOF: TLS 1.3)
    refusals = " | ".join(
        r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()
    )
    assert "presented no client certificate" in refusals
    assert "not valid for metrics_client_ca (unable to get local issuer certificate)" in refusals
    assert "plain HTTP" in refusals
    assert not [r for r in caplog.records if r.exc_info], "a refusal is a line, not a traceback"


def test_a_metrics_ca_file_that_is_not_pem_is_refused_naming_it(tmp_path: Path) -> None:
    pki = PartyPaths.of(make_pki(tmp_path / "pki"), "JP")
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    metrics = GatewayMetrics()
    with pytest.raises(OSError, match=r"not-a-ca\.pem"):
        metrics.serve("127.0.0.1:0", MetricsTls(pki.gateway_cert, pki.gateway_key, bad))
    metrics.stop()
