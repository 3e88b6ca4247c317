"""The fuzz targets by name, in the order ``scripts/fuzz.sh`` runs them."""

from __future__ import annotations

TARGETS: dict[str, str] = {
    "client_head": "tests.fuzz.client_head",
    "origin_head": "tests.fuzz.origin_head",
    "instruct": "tests.fuzz.instruct",
    "publish_json": "tests.fuzz.publish_json",
    "publish_zmq": "tests.fuzz.publish_zmq",
    "wsevents": "tests.fuzz.wsevents",
    "wscontrol": "tests.fuzz.wscontrol",
    "routes": "tests.fuzz.routes",
    "config": "tests.fuzz.config",
    "grip_sig": "tests.fuzz.grip_sig",
    "jsonp": "tests.fuzz.jsonp",
}
