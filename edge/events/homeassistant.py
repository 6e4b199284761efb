"""Home Assistant MQTT discovery: the retained ``config`` messages that make edge's topics entities.

Pure functions: they build (topic, payload) pairs; :class:`edge.telemetry.mqtt.MqttExporter` sends
them (retained) when it connects, when Home Assistant announces itself on ``<discovery_prefix>/status``
and when a camera/zone/label first appears. Every entity belongs to one device (one edge process
per node id) and shares its availability topic (``<prefix>/available``: ``online``/``offline``,
the latter as the MQTT last will), so Home Assistant shows them unavailable when edge goes away.

Topics follow ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``; Home Assistant takes
only ``[A-Za-z0-9_-]`` in node and object ids, so names are reduced with :func:`ha_id`.

Entities:

- per camera, zone and label: a ``binary_sensor`` (device class ``occupancy``: on while at least one
  such object is in the zone) and a ``sensor`` with the count, both reading the retained count topic;
- per camera, line and label: two ``sensor`` s (``in`` and ``out``, ``total_increasing``);
- the device's FPS (inference), inference time (p50 of the invoke stage), temperature and power,
  read from the JSON on ``<prefix>/stats`` (keys of :func:`edge.telemetry.stats_payload.stats_payload`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import edge

DISCOVERY_PREFIX = "homeassistant"
MANUFACTURER = "edge-detect"
ORIGIN = {"name": "edge-detect", "sw_version": edge.__version__}
# the count topic holds a number; the binary sensor turns it into ON/OFF
OCCUPANCY_TEMPLATE = '{{ "ON" if value|int > 0 else "OFF" }}'
# Values read from the stats JSON. A key the payload lacks (no power sensor, no frame yet) renders
# "None", which Home Assistant's MQTT sensor takes as "unknown" rather than as a reading.
FPS_TEMPLATE = "{{ value_json.fps.inference }}"
INFERENCE_TEMPLATE = ("{{ value_json.latency_ms.invoke.p50 if value_json.latency_ms is defined "
                      "and value_json.latency_ms.invoke is defined else none }}")
# the SoC's sensor on a Raspberry Pi is the thermal zone "cpu-thermal"; elsewhere the hottest reading
TEMPERATURE_TEMPLATE = ("{% set t = value_json.temperatures if value_json.temperatures is defined else {} %}"
                        "{{ t['cpu-thermal'] if 'cpu-thermal' in t else (t.values()|max if t else none) }}")
POWER_TEMPLATE = "{{ value_json.power.watts if value_json.power is defined else none }}"


def ha_id(name: str) -> str:
    """``name`` reduced to what Home Assistant takes in a node or object id: ``[A-Za-z0-9_-]``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "_"


def node_id(client_id: str, hostname: str, prefix: str) -> str:
    """The device's id: the configured MQTT client id, else ``edge-<hostname>`` with the topic prefix
    when it is not the default ``edge`` (two processes on one host use two prefixes). Never the default
    client id, whose pid would make a new device at every restart."""
    if client_id:
        return ha_id(client_id)
    if not hostname:
        raise ValueError("node_id needs a client id or a host name; both are empty")
    base = f"edge-{hostname}"
    return ha_id(base if prefix.strip("/") == "edge" else f"{base}-{prefix}")


@dataclass(frozen=True, slots=True)
class Device:
    """The Home Assistant device every entity is grouped under."""

    node_id: str
    name: str
    model: str
    sw_version: str = edge.__version__

    def payload(self) -> dict:
        return {"identifiers": [self.node_id], "name": self.name, "model": self.model,
                "manufacturer": MANUFACTURER, "sw_version": self.sw_version}


@dataclass(frozen=True, slots=True)
class Config:
    """One discovery message: send ``json()`` retained on ``topic``."""

    topic: str
    payload: dict

    def json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _config(component: str, device: Device, object_id: str, availability_topic: str, discovery_prefix: str,
            **fields) -> Config:
    object_id = ha_id(object_id)
    payload = {"unique_id": f"{device.node_id}_{object_id}", "device": device.payload(), "origin": ORIGIN,
               "availability_topic": availability_topic, "payload_available": "online",
               "payload_not_available": "offline", **fields}
    return Config(f"{discovery_prefix.rstrip('/')}/{component}/{device.node_id}/{object_id}/config", payload)


def _where(camera: str, zone: str) -> str:
    return camera if zone == "all" else f"{camera} {zone}"


def zone_configs(device: Device, availability_topic: str, state_topic: str, camera: str, zone: str, label: str,
                 discovery_prefix: str = DISCOVERY_PREFIX) -> list[Config]:
    """The occupancy binary sensor and the count sensor of ``label`` in ``zone`` of ``camera`` (zone
    "all": the whole frame), both reading the retained count on ``state_topic``."""
    where = _where(camera, zone)
    key = f"{camera}_{zone}_{label}"
    return [_config("binary_sensor", device, f"{key}_occupancy", availability_topic, discovery_prefix,
                    name=f"{where} {label} occupancy", state_topic=state_topic, device_class="occupancy",
                    value_template=OCCUPANCY_TEMPLATE, payload_on="ON", payload_off="OFF"),
            _config("sensor", device, f"{key}_count", availability_topic, discovery_prefix,
                    name=f"{where} {label} count", state_topic=state_topic, state_class="measurement",
                    unit_of_measurement="objects", icon="mdi:counter")]


def line_configs(device: Device, availability_topic: str, state_topics: dict[str, str], camera: str, line: str,
                 label: str, discovery_prefix: str = DISCOVERY_PREFIX) -> list[Config]:
    """One ``total_increasing`` sensor per direction of ``state_topics`` ({"in": topic, "out": topic})."""
    return [_config("sensor", device, f"{camera}_{line}_{label}_{direction}", availability_topic,
                    discovery_prefix, name=f"{camera} {line} {label} {direction}", state_topic=topic,
                    state_class="total_increasing", unit_of_measurement="objects", icon="mdi:transit-transfer")
            for direction, topic in sorted(state_topics.items())]


def stats_configs(device: Device, availability_topic: str, stats_topic: str,
                  discovery_prefix: str = DISCOVERY_PREFIX) -> list[Config]:
    """FPS, inference time, temperature and power of the device, from the stats JSON on ``stats_topic``."""
    common = {"state_topic": stats_topic, "state_class": "measurement", "entity_category": "diagnostic"}
    return [_config("sensor", device, "fps", availability_topic, discovery_prefix, name="FPS",
                    value_template=FPS_TEMPLATE, unit_of_measurement="fps", icon="mdi:speedometer", **common),
            _config("sensor", device, "inference_time", availability_topic, discovery_prefix,
                    name="Inference time", value_template=INFERENCE_TEMPLATE, device_class="duration",
                    unit_of_measurement="ms", suggested_display_precision=1, **common),
            _config("sensor", device, "temperature", availability_topic, discovery_prefix, name="Temperature",
                    value_template=TEMPERATURE_TEMPLATE, device_class="temperature",
                    unit_of_measurement="°C", **common),
            _config("sensor", device, "power", availability_topic, discovery_prefix, name="Power",
                    value_template=POWER_TEMPLATE, device_class="power", unit_of_measurement="W", **common)]
