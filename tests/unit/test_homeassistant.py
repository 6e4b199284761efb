"""Home Assistant discovery payloads: ids, topics, one device, and the value templates rendered by Jinja2
(Home Assistant's template engine; its sandbox, as Home Assistant runs templates) on real stats payloads."""

import json
import math

import pytest

from edge.events import homeassistant as ha
from edge.telemetry.stats import PipelineStats
from edge.telemetry.stats_payload import stats_payload
from edge.telemetry.system import SystemSample
from edge.telemetry.thermal import Temperature

jinja2_sandbox = pytest.importorskip("jinja2.sandbox", reason="jinja2 renders the templates (pip install jinja2)")

DEVICE = ha.Device("edge-pi5", "edge pi5", "Raspberry Pi 5 Model B Rev 1.0", "1.2.3")
AVAILABLE = "edge/available"


def render(template: str, payload) -> str:
    """The state Home Assistant's MQTT sensor gets from ``template`` for an MQTT payload (str or dict)."""
    value = payload if isinstance(payload, str) else json.dumps(payload)
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    variables = {"value": value}
    try:
        variables["value_json"] = json.loads(value)
    except ValueError:
        pass
    return env.from_string(template).render(**variables).strip()


def test_ids_are_what_home_assistant_takes():
    assert ha.ha_id("front door/#1.cam") == "front_door_1_cam"
    assert ha.ha_id("///") == "_"
    assert ha.node_id("", "pi5.lan", "edge") == "edge-pi5_lan"          # stable: no pid in it
    assert ha.node_id("", "pi5", "garage/edge") == "edge-pi5-garage_edge"
    assert ha.node_id("my client", "pi5", "edge") == "my_client"
    with pytest.raises(ValueError, match="both are empty"):
        ha.node_id("", "", "edge")


def test_zone_entities_read_the_retained_count_topic():
    occupancy, count = ha.zone_configs(DEVICE, AVAILABLE, "edge/front/porch/person", "front", "porch", "person")
    assert occupancy.topic == "homeassistant/binary_sensor/edge-pi5/front_porch_person_occupancy/config"
    assert count.topic == "homeassistant/sensor/edge-pi5/front_porch_person_count/config"
    for config in (occupancy, count):
        p = config.payload
        assert p["state_topic"] == "edge/front/porch/person"
        assert (p["availability_topic"], p["payload_available"], p["payload_not_available"]) == \
            (AVAILABLE, "online", "offline")
        assert p["device"] == {"identifiers": ["edge-pi5"], "name": "edge pi5", "model": "Raspberry Pi 5 Model B Rev 1.0",
                               "manufacturer": "edge-detect", "sw_version": "1.2.3"}
        assert json.loads(config.json()) == p
    assert occupancy.payload["unique_id"] == "edge-pi5_front_porch_person_occupancy"
    assert count.payload["unique_id"] == "edge-pi5_front_porch_person_count"
    assert occupancy.payload["device_class"] == "occupancy"
    assert (occupancy.payload["payload_on"], occupancy.payload["payload_off"]) == ("ON", "OFF")
    assert occupancy.payload["name"] == "front porch person occupancy"
    assert count.payload["state_class"] == "measurement" and "value_template" not in count.payload
    template = occupancy.payload["value_template"]
    assert [render(template, n) for n in ("0", "1", "7")] == ["OFF", "ON", "ON"]


def test_whole_frame_zone_and_other_discovery_prefix():
    occupancy, count = ha.zone_configs(DEVICE, AVAILABLE, "edge/front/car", "front", "all", "car", "ha/")
    assert occupancy.topic == "ha/binary_sensor/edge-pi5/front_all_car_occupancy/config"
    assert count.payload["name"] == "front car count"


def test_line_entities_one_per_direction():
    configs = ha.line_configs(DEVICE, AVAILABLE, {"in": "edge/front/gate/person/in", "out": "edge/front/gate/person/out"},
                              "front", "gate", "person")
    assert [c.topic for c in configs] == ["homeassistant/sensor/edge-pi5/front_gate_person_in/config",
                                          "homeassistant/sensor/edge-pi5/front_gate_person_out/config"]
    assert [c.payload["state_topic"] for c in configs] == ["edge/front/gate/person/in", "edge/front/gate/person/out"]
    assert {c.payload["state_class"] for c in configs} == {"total_increasing"}


def _payload(temperatures=(), watts=math.nan):
    stats = PipelineStats()
    for ms in (10.0, 12.0, 14.0):
        stats.published_frame({"invoke": ms / 1e3, "preprocess": 0.001}, ["person"])
    unavailable = {} if not math.isnan(watts) else {"power": "no sensor"}
    sample = SystemSample(watts=watts, power_source="pmic" if unavailable == {} else "",
                          temperatures=tuple(temperatures), unavailable=unavailable)
    return stats_payload(stats.snapshot(), sample)


def test_stats_sensors_render_the_stats_payload():
    configs = {c.payload["unique_id"]: c for c in ha.stats_configs(DEVICE, AVAILABLE, "edge/stats")}
    assert set(configs) == {"edge-pi5_fps", "edge-pi5_inference_time", "edge-pi5_temperature", "edge-pi5_power"}
    assert {c.payload["state_topic"] for c in configs.values()} == {"edge/stats"}
    assert {c.payload["state_class"] for c in configs.values()} == {"measurement"}
    assert [configs[f"edge-pi5_{k}"].payload.get("device_class") for k in ("inference_time", "temperature", "power")] \
        == ["duration", "temperature", "power"]
    assert [configs[f"edge-pi5_{k}"].payload["unit_of_measurement"] for k in ("fps", "inference_time", "temperature",
                                                                              "power")] == ["fps", "ms", "°C", "W"]
    full = _payload([Temperature("rp1_adc", "hwmon", 41.0), Temperature("cpu-thermal", "thermal_zone", 55.25)], 4.5)
    state = {k.removeprefix("edge-pi5_"): render(c.payload["value_template"], full) for k, c in configs.items()}
    assert state["fps"] == str(full["fps"]["inference"])
    assert float(state["inference_time"]) == pytest.approx(12.0)
    assert state["temperature"] == "55.2"          # the SoC's sensor (rounded to 0.1 by the payload), not the max
    assert state["power"] == "4.5"
    hottest = _payload([Temperature("acpitz", "thermal_zone", 38.0), Temperature("coretemp/Core 0", "hwmon", 61.0)])
    assert render(configs["edge-pi5_temperature"].payload["value_template"], hottest) == "61.0"
    # no sensor: "None", which Home Assistant's MQTT sensor takes as unknown (not 0)
    bare = _payload()
    assert "power" not in bare and "temperatures" not in bare
    assert render(configs["edge-pi5_power"].payload["value_template"], bare) == "None"
    assert render(configs["edge-pi5_temperature"].payload["value_template"], bare) == "None"
    empty = stats_payload(PipelineStats().snapshot())     # before the first frame
    assert render(configs["edge-pi5_inference_time"].payload["value_template"], empty) == "None"


def test_all_entities_share_one_device_and_have_distinct_ids():
    configs = (ha.stats_configs(DEVICE, AVAILABLE, "edge/stats")
               + ha.zone_configs(DEVICE, AVAILABLE, "edge/a/person", "a", "all", "person")
               + ha.zone_configs(DEVICE, AVAILABLE, "edge/a/z/person", "a", "z", "person"))
    assert len({c.payload["unique_id"] for c in configs}) == len({c.topic for c in configs}) == len(configs) == 8
    assert len({json.dumps(c.payload["device"]) for c in configs}) == 1


def test_a_config_with_a_non_finite_number_is_refused():
    with pytest.raises(ValueError, match="Out of range float"):
        ha.Config("t", {"x": math.nan}).json()
