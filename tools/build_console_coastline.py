"""Build the console's coastline: Natural Earth 1:10m land, clipped to the region of the
scenarios, written as a small GeoJSON file vendored into `client/console/static/data/`.

Run by hand when the region or the source changes (the output is committed):

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    .venv/bin/pip install shapely
    .venv/bin/python tools/build_console_coastline.py package/land-10m.json

Why 1:10m: it is the only Natural Earth scale that contains Yonaguni (a 13-point ring at
122.94-123.02 E, 24.44-24.48 N). Why clip: the whole file is 3 MB; the region is a few dozen KB.
The source is public domain (Natural Earth), redistributed as TopoJSON by world-atlas (ISC).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon, Polygon, box, mapping

# West, south, east, north (degrees): Taiwan, the Ryukyus to Okinawa, the facing coast of the
# mainland; every position in sim/scenarios/*.toml lies inside it (22.5-26.2 N, 119.8-127.65 E).
REGION = (117.5, 20.5, 130.0, 29.5)
DIGITS = 4  # ~10 m: finer than the source's quantization (~190 m of latitude)
OUT = Path(__file__).resolve().parent.parent / "client/console/static/data/coastline.geojson"


def arcs_of(topology: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """Decode TopoJSON's quantized, delta-encoded arcs into absolute (lon, lat) points."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    decoded = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        decoded.append(points)
    return decoded


def ring(arcs: list[list[tuple[float, float]]], indexes: list[int]) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for index in indexes:
        arc = arcs[index] if index >= 0 else list(reversed(arcs[~index]))
        points.extend(arc[1:] if points else arc)  # consecutive arcs share their end point
    return points


def land_polygons(topology: dict[str, Any]) -> list[Polygon]:
    arcs = arcs_of(topology)
    polygons = []
    for geometry in topology["objects"]["land"]["geometries"]:
        parts = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        for part in parts:
            rings = [ring(arcs, r) for r in part]
            polygons.append(Polygon(rings[0], rings[1:]))
    return polygons


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("land_10m", type=Path, help="world-atlas land-10m.json (TopoJSON)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    topology = json.loads(args.land_10m.read_text(encoding="utf-8"))
    region = box(*REGION)
    features = []
    for polygon in land_polygons(topology):
        if not polygon.intersects(region):
            continue
        clipped = polygon.buffer(0).intersection(region)
        parts = clipped.geoms if isinstance(clipped, MultiPolygon) else [clipped]
        for part in parts:
            if isinstance(part, Polygon) and not part.is_empty:
                geometry = mapping(part)
                geometry["coordinates"] = rounded(geometry["coordinates"])
                features.append({"type": "Feature", "properties": {}, "geometry": geometry})
    collection = {
        "type": "FeatureCollection",
        "source": "Natural Earth 1:10m land (public domain), v4.1.0 via world-atlas 2.0.2",
        "region_wsen": list(REGION),
        "features": features,
    }
    args.out.write_text(json.dumps(collection, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(features)} polygons, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
