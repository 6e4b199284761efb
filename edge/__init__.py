"""Edge object-detection runtime for the Raspberry Pi and the Coral Edge TPU."""

__version__ = "0.1.0"
