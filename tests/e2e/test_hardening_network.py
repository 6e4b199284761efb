"""Issue 14, network: the live view and /metrics beyond loopback only with credentials (from a
0600 file) or an explicit insecure_listen; TLS from a given certificate; idle timeouts and a
connection cap (200 held sockets do not mean 200 threads); MQTT credentials from a file, TLS, and a
bounded paho store at QoS 1 with drops counted. Every socket here is on 127.0.0.1."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.telemetry.stats import PipelineStats
from edge.web.security import Credentials, is_loopback
from tests.helpers import frame_result, free_port, run_edge, wait_for


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    done = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                           "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"openssl cannot make a certificate: {done.stderr.strip()}")
    key.chmod(0o600)
    return crt, key


def web(**kw):
    from edge.web.server import WebServer
    server = WebServer(PipelineStats(), lambda: {"ok": 1}, port=0, **kw)
    server.publish(frame_result(0))
    return server


def get(port: int, path: str = "/stats", headers: dict | None = None, context: ssl.SSLContext | None = None):
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10) if context
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---- exposure ----

def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("::")


@pytest.mark.parametrize("kind", ["web", "prometheus"])
def test_binding_beyond_loopback_needs_credentials_or_insecure_listen(kind, tmp_path, caplog):
    from edge.telemetry.prometheus import PrometheusExporter

    def make(**kw):
        if kind == "web":
            return web(address="0.0.0.0", **kw)
        return PrometheusExporter(PipelineStats(), None, 0, "0.0.0.0", **kw)

    with pytest.raises(ConfigError, match="open to the network without authentication.*--insecure-listen"):
        make()
    server = make(insecure_listen=True)        # bound to every address, talked to on loopback only
    try:
        assert "without authentication (insecure_listen)" in caplog.text
        assert get(server.port, "/stats" if kind == "web" else "/metrics")[0] == 200
    finally:
        server.close()


def test_auth_file_must_be_private(tmp_path):
    loose = secret(tmp_path / "token", "s3cret", 0o644)
    with pytest.raises(ConfigError) as err:
        web(auth_file=str(loose))
    assert "mode 0644" in str(err.value) and "chmod 600" in err.value.remedy and "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        web(auth_file=str(tmp_path / "missing"))


def test_edge_run_refuses_an_open_bind_in_one_line(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(f'[web]\nport = {free_port()}\naddress = "0.0.0.0"\n[output]\njsonl = ""\nlive = "off"\n'
                      "max_frames = 2\n")
    done = run_edge("-c", str(config))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("edge: error:")]
    assert errors == ["edge: error: the live view on 0.0.0.0 would be open to the network without authentication "
                      "(give --web-auth FILE (a token or user:password, mode 0600), or --insecure-listen to serve "
                      "it anyway, or bind 127.0.0.1)"]


# ---- authentication ----

def test_web_token(tmp_path):
    server = web(auth_file=str(secret(tmp_path / "token", "s3cret-token")))
    try:
        status, _ = get(server.port)
        assert status == 401
        assert get(server.port, headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        assert get(server.port, headers=basic("anyone", "s3cret-token"))[0] == 200      # a browser's prompt
        assert get(server.port, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(server.port, "/snapshot.jpg", headers=basic("x", "s3cret-token"))[0] == 200
        assert server.stats.snapshot().errors["web_auth"] == 2
    finally:
        server.close()


def test_web_user_password(tmp_path):
    server = web(auth_file=str(secret(tmp_path / "cred", "alice:pa:ss")))
    try:
        assert get(server.port, headers=basic("alice", "pa:ss"))[0] == 200
        assert get(server.port, headers=basic("bob", "pa:ss"))[0] == 401
        assert get(server.port, headers={"Authorization": "Bearer pa:ss"})[0] == 401
    finally:
        server.close()


def test_credentials_parse_garbage():
    c = Credentials("tok")
    for header in (None, "", "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe").decode(), "Digest x", "Bearer"):
        assert not c.accepts(header)


def test_prometheus_auth(tmp_path):
    from edge.telemetry.prometheus import PrometheusExporter
    exporter = PrometheusExporter(PipelineStats(), None, 0, auth_file=str(secret(tmp_path / "t", "scrape-me")))
    try:
        assert get(exporter.port, "/metrics")[0] == 401
        status, body = get(exporter.port, "/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert status == 200 and b"edge_frames_captured_total" in body
    finally:
        exporter.close()


# ---- TLS ----

def test_web_tls(cert, tmp_path):
    crt, key = cert
    server = web(tls_cert=str(crt), tls_key=str(key), auth_file=str(secret(tmp_path / "t", "tok")))
    context = ssl.create_default_context(cafile=str(crt))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as plain:   # plain HTTP to the TLS port
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            plain.settimeout(10)
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 200")
        status, body = get(server.port, headers={"Authorization": "Bearer tok"}, context=context)
        assert status == 200 and body == b'{"ok": 1}'
    finally:
        server.close()


def test_prometheus_tls(cert):
    from edge.telemetry.prometheus import PrometheusExporter
    crt, key = cert
    exporter = PrometheusExporter(PipelineStats(), None, 0, tls_cert=str(crt), tls_key=str(key))
    try:
        status, body = get(exporter.port, "/metrics", context=ssl.create_default_context(cafile=str(crt)))
        assert status == 200 and b"edge_frames_inferred_total" in body
    finally:
        exporter.close()


def test_tls_refuses_a_readable_key_and_half_a_pair(cert, tmp_path):
    crt, key = cert
    loose = tmp_path / "key.pem"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        web(tls_cert=str(crt), tls_key=str(loose))
    with pytest.raises(ConfigError, match="both tls_cert and tls_key"):
        web(tls_cert=str(crt))
    bad = secret(tmp_path / "bad.pem", "not a key")
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        web(tls_cert=str(crt), tls_key=str(bad))


# ---- connection cap and idle timeout ----

def hold(port: int, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.append(s)
    return held


def _cap_test(port: int, path: str, cap: int, baseline: int, stats: PipelineStats, kind: str) -> int:
    held = hold(port, 200)
    try:
        time.sleep(0.5)
        peak = threading.active_count()
        assert peak - baseline <= cap + 2, f"{peak - baseline} threads for 200 held connections"
        # a new client: refused cleanly (503, closed), not left hanging
        status, _ = get(port, path)
        assert status == 503
        wait_for(lambda: stats.snapshot().errors[f"{kind}_refused"] >= 200 - cap, 10, "every extra one refused")
    finally:
        for s in held:
            s.close()
    wait_for(lambda: get(port, path)[0] == 200, 10, "a slot free again", ignore=(OSError, http.client.HTTPException))
    return peak - baseline


def test_web_200_held_connections_bounded_threads():
    baseline = threading.active_count()
    server = web(max_connections=8, idle_timeout=30)
    try:
        extra = _cap_test(server.port, "/stats", 8, baseline, server.stats, "web")
        print(f"web: {extra} threads above baseline with 200 held connections (cap 8)")
    finally:
        server.close()


def test_prometheus_200_held_connections_bounded_threads():
    from edge.telemetry.prometheus import PrometheusExporter
    baseline = threading.active_count()
    stats = PipelineStats()
    exporter = PrometheusExporter(stats, None, 0, max_connections=4, idle_timeout=30)
    try:
        extra = _cap_test(exporter.port, "/metrics", 4, baseline, stats, "prometheus")
        print(f"prometheus: {extra} threads above baseline with 200 held connections (cap 4)")
    finally:
        exporter.close()


@pytest.mark.parametrize("kind", ["web", "prometheus"])
def test_idle_connections_are_closed(kind):
    from edge.telemetry.prometheus import PrometheusExporter
    server = (web(idle_timeout=0.5) if kind == "web"
              else PrometheusExporter(PipelineStats(), None, 0, idle_timeout=0.5))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\n")           # half a request, then silence
            s.settimeout(10)
            started = time.monotonic()
            while s.recv(1000):
                pass
            assert time.monotonic() - started < 5
    finally:
        server.close()


def test_a_stalled_stream_viewer_is_dropped():
    server = web(idle_timeout=0.5, fps=100)
    try:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        stop = threading.Event()

        noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)   # ~300 KB a JPEG

        def frames():
            i = 1
            while not stop.is_set():
                r = frame_result(i)
                server.publish(dataclasses.replace(r, frame=dataclasses.replace(r.frame, image=noise)))
                i += 1
                time.sleep(0.01)
        feeder = threading.Thread(target=frames, daemon=True)
        feeder.start()
        try:
            wait_for(lambda: server._server._slots()._value == 16, 20,
                     "the stalled viewer's thread to give up its slot")
        finally:
            stop.set()
            s.close()
    finally:
        server.close()


# ---- MQTT ----

from tests.integration.test_mqtt import MOSQUITTO, Broker  # noqa: E402


class ConfiguredBroker(Broker):
    def __init__(self, tmp: Path, extra: str = ""):
        super().__init__(tmp)
        self.conf.write_text(f"listener {self.port} 127.0.0.1\npersistence false\nlog_dest stderr\n" + extra)


def needs_mosquitto():
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")


@pytest.fixture()
def public(tmp_path):
    """A directory mosquitto can read after it drops root for its own user (pytest's tmp is 0700)."""
    import shutil
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="edge-mqtt-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_mqtt_password_file(tmp_path, public):
    needs_mosquitto()
    from edge.telemetry.mqtt import MqttExporter
    passwd = public / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "hunter2"], check=True, capture_output=True)
    passwd.chmod(0o644)         # mosquitto runs as another user when started as root
    broker = ConfiguredBroker(tmp_path, f"allow_anonymous false\npassword_file {passwd}\n")
    broker.start()
    try:
        with pytest.raises(ConfigError, match="chmod 600"):
            MqttExporter(PipelineStats(), dict, "cam", host="127.0.0.1", port=broker.port,
                         password_file=str(secret(tmp_path / "loose", "edge:hunter2", 0o640)))
        good = MqttExporter(PipelineStats(), dict, "cam", host="127.0.0.1", port=broker.port,
                            password_file=str(secret(tmp_path / "pw", "edge:hunter2")))
        try:
            assert good.connected.wait(10)
        finally:
            good.close()
        only_password = MqttExporter(PipelineStats(), dict, "cam", host="127.0.0.1", port=broker.port,
                                     username="edge", password_file=str(secret(tmp_path / "pw2", "wrong")))
        try:
            assert not only_password.connected.wait(2)     # refused by the broker
        finally:
            only_password.close()
    finally:
        broker.stop()


def test_mqtt_tls(tmp_path, cert, public):
    needs_mosquitto()
    from edge.telemetry.mqtt import MqttExporter
    crt, key = cert
    broker_crt, broker_key = public / "cert.pem", public / "key.pem"   # mosquitto's copies, readable to it
    broker_crt.write_bytes(crt.read_bytes())
    broker_key.write_bytes(key.read_bytes())
    broker_key.chmod(0o644)
    broker = ConfiguredBroker(tmp_path, f"allow_anonymous true\ncertfile {broker_crt}\nkeyfile {broker_key}\n")
    broker.start()
    try:
        exporter = MqttExporter(PipelineStats(), dict, "cam", host="127.0.0.1", port=broker.port, tls_ca=str(crt))
        try:
            assert exporter.connected.wait(10)
        finally:
            exporter.close()
    finally:
        broker.stop()


def test_mqtt_paho_store_bounded_at_qos1_while_the_broker_is_down(tmp_path):
    needs_mosquitto()
    from edge.telemetry.mqtt import MqttExporter
    broker = ConfiguredBroker(tmp_path, "allow_anonymous true\n")
    broker.start()
    stats = PipelineStats()
    exporter = MqttExporter(stats, dict, "cam", host="127.0.0.1", port=broker.port, qos=1, max_queued=100,
                            send_interval=0.01, reconnect_max=1)
    try:
        assert exporter.connected.wait(10)
        broker.stop()                               # the broker goes away mid-run
        wait_for(lambda: not exporter.connected.is_set(), 10, "the client to notice")
        for i in range(3000):
            exporter.publish(frame_result(i))
        exporter.flush()
        assert len(exporter.client._out_messages) <= 100       # paho's own store (was 25,372 in the issue)
        assert stats.snapshot().errors["mqtt_dropped"] >= 2900
        broker.start()                              # back: the kept ones go out, new ones flow again
        wait_for(exporter.connected.is_set, 20, "reconnect")
        wait_for(lambda: len(exporter.client._out_messages) == 0, 20, "the store to drain")
    finally:
        exporter.close()
        broker.stop()


def test_mqtt_stalled_broker_bounds_paho_at_qos0():
    """A 'broker' on loopback that accepts the connection, answers CONNACK, then never reads again."""
    from edge.telemetry import mqtt as mqtt_mod
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    conns = []

    def serve():
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conns.append(conn)
        conn.recv(1024)                          # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")        # CONNACK, accepted; then silence
    threading.Thread(target=serve, daemon=True).start()
    stats = PipelineStats()
    exporter = mqtt_mod.MqttExporter(stats, dict, "cam", host="127.0.0.1", port=port, qos=0, send_interval=0.01)
    try:
        assert exporter.connected.wait(10)
        payload = "x" * 15_000                   # a big event; the loopback buffers take a few MB of them
        started = time.monotonic()
        while time.monotonic() - started < 3:
            for _ in range(1000):
                exporter._enqueue(exporter.topic("events"), payload)     # what publish() queues per frame
            time.sleep(0.05)
        assert len(exporter.client._out_packet) <= mqtt_mod.MAX_QUEUED + 10     # one burst at most
        assert stats.snapshot().errors.get("mqtt_queue_full", 0) > 0
        started = time.monotonic()
        exporter.close()                 # does not wait for the keepalive to give up on the broker
        assert time.monotonic() - started < 10
        assert stats.snapshot().errors["mqtt_dropped"] > 0
    finally:
        exporter.close()
        for c in conns:
            c.close()
        listener.close()
