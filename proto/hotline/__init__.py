"""The Hotline protocol: the `hotline.v1` specification and its rules in plain Python.

This package is the bottom layer. It holds the generated protobuf code (`hotline.v1`) and the
protocol's rules that every implementation needs (validation, signing, the link state machine).
Nothing here imports grpc or touches sockets, files or clocks on its own.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2  # the peer link's protocol version (Hello.protocol_version)
