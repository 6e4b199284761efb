"""Pre-processing into the input tensor: quantization folded into a LUT, geometry undone once."""

import tracemalloc

import cv2
import numpy as np
import pytest

from edge.capture.base import Frame
from edge.runtime.manifest import InputSpec
from edge.runtime.model import Quantization, TensorInfo
from edge.vision.preprocess import Preprocessor, quantization_lut

MOBILENET = InputSpec(colour="RGB", mean=(127.5,) * 3, std=(127.5,) * 3)


def tensor(type_, scale=None, zp=None, shape=(1, 300, 300, 3)):
    q = Quantization((scale,), (zp,)) if scale is not None else None
    return TensorInfo(0, "input", shape, type_, q)


def frame(image, fmt="BGR"):
    return Frame(image=image, index=0, timestamp=0.0, captured_ns=0, format=fmt)


def test_coral_uint8_input_is_the_identity():
    # Coral-zoo / our default model: uint8 with scale 2/255 and zero point 127 or 128 = raw pixels.
    assert quantization_lut(MOBILENET, tensor("UINT8", 2 / 255, 128)) is None
    assert quantization_lut(MOBILENET, tensor("UINT8", 0.007843137718737125, 127)) is None


def test_int8_input_uses_the_zero_point_not_a_xor():
    lut = quantization_lut(InputSpec(mean=(0,) * 3, std=(255,) * 3), tensor("INT8", 1 / 255, -128))
    assert lut.dtype == np.int8
    assert lut[0, 0, 0] == -128 and lut[255, 0, 0] == 127
    # A zero point other than -128 must be honoured (an XOR 0x80 would get this wrong).
    lut = quantization_lut(MOBILENET, tensor("INT8", 2 / 255, 0))
    assert lut[127, 0, 0] == 0 and lut[0, 0, 0] == -128 and lut[255, 0, 0] == 127


def test_float_input_is_normalised():
    lut = quantization_lut(InputSpec(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
                           tensor("FLOAT32"))
    assert lut.dtype == np.float32
    assert lut[0, 0, 0] == pytest.approx(-123.675 / 58.395)
    assert lut[255, 0, 2] == pytest.approx((255 - 103.53) / 57.375)


def test_stretch_matches_a_plain_opencv_reference(clip_frames):
    image = clip_frames[120]
    pre = Preprocessor(MOBILENET, tensor("UINT8", 2 / 255, 128), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.uint8)
    transform = pre(frame(image), out)
    reference = cv2.cvtColor(cv2.resize(image, (300, 300)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(out[0], reference)
    assert transform.scale_x == pytest.approx(300 / 640) and transform.scale_y == pytest.approx(300 / 272)


def test_float_model_input(clip_frames):
    image = clip_frames[0]
    pre = Preprocessor(MOBILENET, tensor("FLOAT32"), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.float32)
    pre(frame(image), out)
    reference = cv2.cvtColor(cv2.resize(image, (300, 300)), cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1
    assert np.allclose(out[0], reference, atol=1e-6)


def test_letterbox_pads_and_round_trips_boxes(clip_frames):
    image = clip_frames[0]                       # 640x272 → 300x128 inside 300x300
    spec = InputSpec(colour="RGB", resize="letterbox", pad_value=114)
    pre = Preprocessor(spec, tensor("UINT8", 1.0, 0), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.uint8)
    t = pre(frame(image), out)
    assert (t.pad_x, t.pad_y) == (0, 86)
    assert (out[0, :86] == 114).all() and (out[0, 86 + 128:] == 114).all()
    # A box covering the picture area of the input maps back to the whole frame.
    box = np.array([[0.0, 86 / 300, 1.0, (86 + 128) / 300]], np.float32)
    assert np.allclose(t.boxes_to_frame(box), [[0, 0, 640, 272]], atol=0.5)


def test_crop_takes_the_centre_and_round_trips_boxes(clip_frames):
    image = clip_frames[0]                       # 640x272 → its centre 272x272 (x 184..456) → 224x224
    pre = Preprocessor(InputSpec(colour="RGB", resize="crop"), tensor("UINT8", 1.0, 0, (1, 224, 224, 3)),
                       (1, 224, 224, 3))
    out = np.zeros((1, 224, 224, 3), np.uint8)
    t = pre(frame(image), out)
    reference = cv2.cvtColor(cv2.resize(image[:, 184:456], (224, 224)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(out[0], reference)
    assert np.allclose(t.boxes_to_frame(np.array([[0, 0, 1, 1]], np.float32)), [[184, 0, 456, 272]], atol=1e-3)


def test_yuv420_frames_are_converted():
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[..., 0] = 200                            # red in RGB order
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    pre = Preprocessor(InputSpec(colour="RGB"), tensor("UINT8", 1.0, 0), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.uint8)
    pre(frame(yuv, "YUV420"), out)
    assert abs(int(out[0, 150, 150, 0]) - 200) < 6 and out[0, 150, 150, 2] < 10


def test_no_allocations_in_steady_state(clip_frames):
    pre = Preprocessor(InputSpec(colour="RGB", mean=(127.5,) * 3, std=(127.5,) * 3, resize="letterbox"),
                       tensor("INT8", 2 / 255, 0), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.int8)
    f = frame(clip_frames[0])
    pre(f, out)                                  # first call sizes the buffers
    _assert_no_allocations(pre, f, out)


def test_rejects_non_image_inputs():
    with pytest.raises(Exception, match="expects an image input"):
        Preprocessor(MOBILENET, tensor("UINT8", 1.0, 0, shape=(1, 1000)), (1, 1000))


def test_bgr_model_gets_bgr_and_letterbox_pad_goes_through_the_quantization(clip_frames):
    image = clip_frames[60]
    spec = InputSpec(colour="BGR", std=(255.0,) * 3, resize="letterbox", pad_value=114)
    pre = Preprocessor(spec, tensor("INT8", 1 / 255, -128, shape=(1, 320, 320, 3)), (1, 320, 320, 3))
    out = np.zeros((1, 320, 320, 3), np.int8)
    t = pre(frame(image), out)
    assert out[0, 0, 0].tolist() == [114 - 128] * 3                # pad 114 → int8 code −14
    h = round(272 * 0.5)
    y = (320 - h) // 2
    expected = cv2.resize(image, (320, h)).astype(np.int16) - 128  # BGR kept, zero point −128
    assert np.abs(out[0, y:y + h].astype(np.int16) - expected).max() <= 1
    assert (t.pad_x, t.pad_y, t.scale_x) == (0, y, 0.5)


def test_rgb_frames_for_an_rgb_model_are_not_swapped():
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[..., 0] = 250
    pre = Preprocessor(InputSpec(colour="RGB"), tensor("UINT8", 1.0, 0, shape=(1, 50, 50, 3)), (1, 50, 50, 3))
    out = np.zeros((1, 50, 50, 3), np.uint8)
    pre(frame(rgb, "RGB"), out)
    assert out[0, 25, 25].tolist() == [250, 0, 0]


def test_yuv_frames_allocate_nothing_in_steady_state():
    yuv = cv2.cvtColor(np.full((240, 320, 3), 90, np.uint8), cv2.COLOR_RGB2YUV_I420)
    pre = Preprocessor(InputSpec(colour="RGB", std=(255.0,) * 3), tensor("INT8", 1 / 255, -128), (1, 300, 300, 3))
    out = np.zeros((1, 300, 300, 3), np.int8)
    f = frame(yuv, "YUV420")
    pre(f, out)
    _assert_no_allocations(pre, f, out)


def _assert_no_allocations(pre, f, out):
    """20 more frames after the first allocate (almost) nothing: the steady state reuses buffers."""
    tracemalloc.start()
    for _ in range(20):
        pre(f, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000, f"{peak} bytes allocated per 20 frames"
