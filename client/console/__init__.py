"""The browser console: a small web server on the operator's side that shows one or both watch
floors live, a map of the encounter, link status and a timeline, and lets the page's operator
acknowledge — all through the operator API (`client.operator.OperatorClient`), nothing else.

    console = Console({"JP": jp_client, "TW": tw_client})   # port 0: any free port
    url = await console.start()
    console.note("Phase 1: ...")                             # narration between the floors
    await console.stop()

`app` is the server and its access rules, `feed` the merged, resumable event log, `views` the
JSON the page renders, `geo` what messages put on the map. `hotline console` (`cli`) serves it
from the command line; `hotline demo --web` serves it beside the demo encounter.
"""

from client.console.app import Console

__all__ = ["Console"]
