"""The Hotline protocol: the `hotline.v1` specification and its rules in plain Python.

This package is the bottom layer. It holds the generated protobuf code (`hotline.v1`) and the
protocol's rules that every implementation needs (validation, signing, the link state machine).
Nothing here imports grpc or touches sockets, files or clocks on its own, except two small
modules that the layers above share and may not take from each other: `hotline.transport` (the
mTLS credentials of the gateway and the operator client) and `hotline.journal_file` (a journal
file's format and its read-only reader, for `hotline journal verify` and the simulator's
integrity check, with the verifier itself in `hotline.journal_verify`).
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 3  # the peer link's protocol version (Hello.protocol_version)
