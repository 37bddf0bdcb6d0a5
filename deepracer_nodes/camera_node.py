"""Camera node: frames from a V4L2 camera (or a video, an image folder, a test pattern) to ROS.

Publishes sensor_msgs/Image (bgr8) and sensor_msgs/CameraInfo with the same stamp, the
capture time, and frame_id spec.FRAMES.camera_optical, on sensor-data QoS. The capture
work lives in deepracer_nodes.core.frame_sources; this module wires it to parameters,
topics and /diagnostics.

Concurrency: a V4L2 read blocks until the camera delivers the next frame (up to one
frame period), and reopening a lost camera takes a moment too. The capture timer
therefore has its own callback group: under a MultiThreadedExecutor (what main() uses)
parameter changes and diagnostics keep being served while it waits.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from deepracer_nodes.ros_runtime import run_node
from deepracer_nodes.core import frame_sources
from deepracer_nodes.core.spec import CAMERA, FRAMES, TOPICS
from deepracer_nodes.ros_conversions import array_to_image

DIAGNOSTICS_PERIOD_S = 1.0


@dataclass(frozen=True)
class CameraSettings:
    """The node's runtime parameters, checked."""

    source: str
    width: int
    height: int
    fps: float
    mjpg: bool
    loop: bool
    output_width: int
    output_height: int
    frame_id: str
    reconnect_interval: float

    def check(self) -> None:
        """Raise ValueError with the reason when a value cannot work."""
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f'width and height must be positive, got {self.width}x{self.height}')
        if not 0 < self.fps <= 1000:
            raise ValueError(f'fps must be in (0, 1000], got {self.fps}')
        if self.output_width < 0 or self.output_height < 0:
            raise ValueError('output_width and output_height must not be negative, got '
                             f'{self.output_width}x{self.output_height}')
        if not self.frame_id.strip():
            raise ValueError('frame_id must not be empty')
        if not self.reconnect_interval > 0:
            raise ValueError(f'reconnect_interval must be positive, got {self.reconnect_interval}')
        frame_sources.make_source(self.source, self.width, self.height, self.fps)

    @property
    def output_size(self) -> tuple[int, int] | None:
        if self.output_width == self.output_height == 0:
            return None
        return (self.output_width, self.output_height)

    def make_feed(self) -> frame_sources.CameraFeed:
        # realtime=False: the capture timer already paces file and pattern sources.
        source = frame_sources.make_source(self.source, self.width, self.height, self.fps,
                                           self.mjpg, self.loop, realtime=False)
        return frame_sources.CameraFeed(source, self.output_size, self.reconnect_interval)

    def needs_new_source(self, other: CameraSettings) -> bool:
        return (self.source, self.width, self.height, self.fps, self.mjpg, self.loop) != \
            (other.source, other.width, other.height, other.fps, other.mjpg, other.loop)


# name -> (default, description); the order is the order of declaration.
PARAMETERS = {
    'source': ('auto', "'auto' (first working camera), /dev/videoN, a camera index, "
                       "'synthetic' (test pattern), a video file or a folder of images"),
    'width': (CAMERA.width, 'capture width asked of the camera (px); synthetic pattern width'),
    'height': (CAMERA.height, 'capture height asked of the camera (px)'),
    'fps': (CAMERA.fps, 'frames per second: asked of the camera, and the publish rate'),
    'mjpg': (True, 'ask the camera for MJPG (needed for full rate over USB 2)'),
    'loop': (True, 'replay a video file or image folder when it ends'),
    'output_width': (0, 'resize frames to this width before publishing (px); 0 = keep the '
                        'aspect ratio, or the capture size when output_height is 0 too'),
    'output_height': (0, 'resize frames to this height before publishing (px); 0 = keep the '
                         'aspect ratio, or the capture size when output_width is 0 too'),
    'frame_id': (FRAMES.camera_optical, 'header.frame_id of images and camera info'),
    'reconnect_interval': (1.0, 'seconds between attempts to reopen a lost source'),
}
READ_ONLY_PARAMETERS = {
    'image_topic': (TOPICS.image, 'topic of sensor_msgs/Image'),
    'camera_info_topic': (TOPICS.camera_info, 'topic of sensor_msgs/CameraInfo'),
    'qos_depth': (qos_profile_sensor_data.depth,
                  'queue depth of the sensor-data QoS used for images and camera info'),
}


class CameraNode(Node):
    """Publishes camera frames at `fps`, stamped with their capture time."""

    def __init__(self, **kwargs) -> None:
        super().__init__('camera_node', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        for name, (default, description) in READ_ONLY_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description + ' (set at start only)', read_only=True))
        self._settings = CameraSettings(
            **{name: self.get_parameter(name).value for name in PARAMETERS})
        self._settings.check()  # a source spec that names nothing stops the start here
        self._feed = self._settings.make_feed()
        self._pending: CameraSettings | None = None
        self._lock = threading.Lock()  # guards _pending and the statistics
        self._capture_lock = threading.Lock()  # held while a frame is captured
        self._frames_published = 0
        self._diag_frames, self._diag_time = 0, time.monotonic()
        self._camera_infos: dict[tuple[int, int], CameraInfo] = {}

        depth = self.get_parameter('qos_depth').value
        if depth < 1:
            raise ValueError(f'qos_depth must be at least 1, got {depth}')
        qos = QoSProfile(history=qos_profile_sensor_data.history, depth=depth,
                         reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability)
        self._image_publisher = self.create_publisher(
            Image, self.get_parameter('image_topic').value, qos)
        self._info_publisher = self.create_publisher(
            CameraInfo, self.get_parameter('camera_info_topic').value, qos)
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, TOPICS.diagnostics, 10)
        self._capture_timer = self.create_timer(
            1.0 / self._settings.fps, self._capture,
            callback_group=MutuallyExclusiveCallbackGroup())
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(f'camera source {self._feed.source.description}, publishing '
                               f'{self._describe_output()} on {self._image_publisher.topic_name}')

    # --- parameters ---------------------------------------------------------------------

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        with self._lock:
            base = self._pending or self._settings
            try:
                candidate = replace(base, **changes)
                candidate.check()
            except (TypeError, ValueError) as error:
                return SetParametersResult(successful=False, reason=str(error))
            self._pending = candidate  # applied by the capture thread before its next frame
        return SetParametersResult(successful=True)

    def _apply_pending_settings(self) -> None:
        with self._lock:
            settings, self._pending = self._pending, None
        if settings is None:
            return
        if settings.needs_new_source(self._settings):
            self._feed.close()
            self._feed = settings.make_feed()
            self.get_logger().info(f'camera source now {self._feed.source.description}')
        self._feed.output_size = settings.output_size
        self._feed.reconnect_interval_s = settings.reconnect_interval
        if settings.fps != self._settings.fps:
            self._capture_timer.timer_period_ns = round(1e9 / settings.fps)
        self._settings = settings

    # --- capture ------------------------------------------------------------------------

    def _capture(self) -> None:
        with self._capture_lock:
            self._apply_pending_settings()
            # The stamp is read right after the frame arrives: it is the capture time.
            result = self._feed.poll(time.monotonic(), stamp_clock=self.get_clock().now)
            for event in result.events:
                self._log(event)
            if result.frame is None:
                return
            stamp = result.stamp.to_msg()
            image = array_to_image(result.frame, stamp, self._settings.frame_id, 'bgr8')
            info = self._camera_info(image.width, image.height)
            info.header = image.header
            self._image_publisher.publish(image)
            self._info_publisher.publish(info)
        with self._lock:
            self._frames_published += 1

    def _camera_info(self, width: int, height: int) -> CameraInfo:
        if (width, height) not in self._camera_infos:
            numbers = frame_sources.camera_intrinsics(width, height)
            info = CameraInfo(width=width, height=height,
                              distortion_model=numbers.distortion_model)
            info.d, info.k, info.r, info.p = (list(numbers.d), list(numbers.k),
                                              list(numbers.r), list(numbers.p))
            self._camera_infos[(width, height)] = info
        return self._camera_infos[(width, height)]

    def _log(self, event: frame_sources.FeedEvent) -> None:
        # Each event happens once per change of state, so none of these repeat per frame.
        logger = self.get_logger()
        if event.kind in ('lost', 'unavailable'):
            logger.warning(event.message)
        else:
            logger.info(event.message)

    def _describe_output(self) -> str:
        size = self._settings.output_size
        shown = f'{size[0] or "(aspect)"}x{size[1] or "(aspect)"}' if size else 'capture-size'
        return shown + \
            f' frames at {self._settings.fps:g} fps'

    # --- diagnostics --------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            frames = self._frames_published
            measured_fps = (frames - self._diag_frames) / max(now - self._diag_time, 1e-6)
            self._diag_frames, self._diag_time = frames, now
        feed = self._feed
        level = {frame_sources.STREAMING: DiagnosticStatus.OK,
                 frame_sources.LOST: DiagnosticStatus.ERROR}.get(feed.state,
                                                                 DiagnosticStatus.WARN)
        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: camera', message=feed.state,
            hardware_id=feed.source.description)
        values = {'source': feed.source.description, 'state': feed.state,
                  'measured fps': f'{measured_fps:.2f}', 'target fps': f'{self._settings.fps:g}',
                  'frames published': str(frames), 'times lost': str(feed.times_lost)}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(array)

    @property
    def frames_published(self) -> int:
        with self._lock:
            return self._frames_published

    def destroy_node(self) -> None:
        self._capture_timer.cancel()
        with self._capture_lock:  # a read in flight ends within one frame period
            self._feed.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # Multi-threaded: a V4L2 read blocks up to one frame period in the capture group, and
    # parameter and diagnostics callbacks are served meanwhile.
    return run_node(CameraNode, args, multi_threaded=True)


if __name__ == '__main__':
    raise SystemExit(main())
