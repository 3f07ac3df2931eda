"""Regenerate the Python code for the `hotline.v1` protocol from `proto/hotline/v1/*.proto`.

Usage: python proto/generate.py [--out DIR]

Writes `*_pb2.py`, `*_pb2.pyi` (mypy-protobuf) and `*_pb2_grpc.py` / `*_pb2_grpc.pyi` beside the
`.proto` files (or under DIR, mirroring `hotline/v1/`). The generated files are committed;
`tests/protocol/test_generated_code.py` regenerates into a temporary directory and fails on any difference.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out: Path) -> None:
    from grpc_tools import protoc

    well_known = str(resources.files("grpc_tools") / "_proto")
    # protoc finds the mypy plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH: make sure
    # the ones installed beside this interpreter are found even if the venv is not activated.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "hotline" / "v1").glob("*.proto")
    )
    if not sources:
        raise SystemExit("no .proto files under proto/hotline/v1")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    # protoc resolves relative source names against the include path
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)"
    )
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
