"""`hotline conformance`: a runnable suite that checks a gateway implementation against the spec.

The suite plays the party the target gateway is not: as `peer`, the other party's gateway on
the target's PeerLink (and, listening, the receiver of the target's own deliveries); as
`operator`, one of the target party's watch officers on its Operator service. Each check names
the SPEC.md section and the MUSTs it tests (`registry`); the protocol's own core (`hotline.link`,
`hotline.wire`, `hotline.signing`, `hotline.acceptance`) judges what the target sends.

    registry         checks, results, the MUST-id table
    material         what the suite needs from a `hotline certs init` directory
    examples         the golden examples, made fit to send now between two parties
    pushlink         the dialling end: Push streams driven frame by frame
    peer_checks      the `peer` role's dialling checks
    listener         the listening half (`--listen`): a PeerLink served to the target
    operator_checks  the `operator` role's checks
    suite, report, cli
"""
