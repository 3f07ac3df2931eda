"""The peer link: both ends of the gateway-to-gateway hot line, in one package.

* `sender` dials the peer gateway and pushes our outbox (`PeerSender`);
* `receiver` serves the peer's push stream (`PeerLinkServicer`);
* `status` is what operators see of either direction (`LinkStatus`);
* `ports` are the interfaces the gateway's store satisfies for them (`Outbox`).

The rules of the link live in `hotline.link` (no I/O); this package only does the I/O.
"""
