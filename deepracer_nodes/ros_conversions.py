"""The edges between ROS messages and the ROS-free core: images, stamps, durations."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import Image

from deepracer_nodes.core import images


def image_to_raw(msg: Image) -> images.RawImage:
    """The pixel-describing fields of an Image message (no copy of the data)."""
    return images.RawImage(height=msg.height, width=msg.width, encoding=msg.encoding,
                           step=msg.step, data=msg.data, is_bigendian=bool(msg.is_bigendian))


def array_to_image(pixels: np.ndarray, stamp: TimeMsg, frame_id: str,
                   encoding: str | None = None) -> Image:
    """An Image message holding the pixels, stamped and framed."""
    raw = images.from_array(pixels, encoding)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = raw.height, raw.width
    msg.encoding, msg.step, msg.is_bigendian = raw.encoding, raw.step, 0
    msg.data = raw.data
    return msg


def stamp_to_ns(stamp: TimeMsg) -> int:
    """A header stamp in integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> TimeMsg:
    """Integer nanoseconds as a header stamp."""
    return TimeMsg(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))
