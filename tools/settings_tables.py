"""Write the README's settings tables from the configuration models.

The gateway's (`server.config.GatewayConfig`) and the operator's (`client.config.OperatorFile`)
tables are generated, so the documentation cannot drift from what the files accept; run this
after changing a setting (`tests/cli/test_config_files.py` fails while the README is stale):

    .venv/bin/python tools/settings_tables.py            # rewrites README.md in place
"""

from __future__ import annotations

import sys
from pathlib import Path

from client import config as operator_config
from server import config as gateway_config
from settings import replace_between

README = Path(__file__).resolve().parents[1] / "README.md"


def current(text: str) -> str:
    """The README text with both tables as the models say they should be."""
    text = replace_between(
        text, gateway_config.BEGIN, gateway_config.END, gateway_config.readme_table()
    )
    return replace_between(
        text, operator_config.BEGIN, operator_config.END, operator_config.readme_table()
    )


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = current(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
    print(f"{README}: {'updated' if new != text else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
