"""A loopback RTSP server for tests: serves a video file's H.264 stream with gst-rtsp-server.

Run with the system Python (GObject introspection comes from Debian, not PyPI):

    /usr/bin/python3 tests/integration/rtsp_server.py VIDEO PORT

It prints ``ready rtsp://127.0.0.1:PORT/live`` once it listens, and serves the file to every
client, from its beginning, until killed. Debian packages: gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-good (qtdemux, rtph264pay).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(video: str, port: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{video}" ! qtdemux ! '
                       "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"ready rtsp://127.0.0.1:{port}/live", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
