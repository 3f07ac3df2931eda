"""Check 5 of "Processing a delivery": who may be named as a message's author.

The originator lies in the sending party's trust domain: one of its operators, or its gateway,
which originates the scheduled link tests (`Envelope.originator`; the golden
`valid/link_test.txtpb`). An acknowledgement's responder is one of its watch officers.
"""

from __future__ import annotations

import pytest

from hotline.acceptance import wrong_party
from hotline.v1 import envelope_pb2
from tests.harness import free_text


def jp_to_tw() -> envelope_pb2.Envelope:
    envelope = free_text("check 5")
    envelope.sender_party = "JP"
    return envelope


@pytest.mark.parametrize(
    ("originator", "refused"),
    [
        ("spiffe://jp.hotline/operator/watch-1", False),
        ("spiffe://jp.hotline/gateway", False),  # a scheduled link test
        ("spiffe://tw.hotline/operator/watch-1", True),  # the receiver's own officer
        ("spiffe://tw.hotline/gateway", True),
        ("spiffe://jp.hotline/signing", True),  # a key, not an author
    ],
)
def test_the_originator_is_an_operator_or_the_gateway_of_the_sender(
    originator: str, refused: bool
) -> None:
    envelope = jp_to_tw()
    envelope.originator = originator
    problem = wrong_party(envelope, sender_party="JP", receiver_party="TW")
    assert bool(problem) is refused, problem
    if refused:
        assert problem.startswith("originator")


def test_a_responder_must_be_an_operator_of_the_sender() -> None:
    envelope = jp_to_tw()
    envelope.originator = "spiffe://jp.hotline/operator/watch-1"
    envelope.ClearField("free_text")
    envelope.acknowledgement.responder = "spiffe://jp.hotline/gateway"
    problem = wrong_party(envelope, sender_party="JP", receiver_party="TW")
    assert problem.startswith("acknowledgement.responder")
