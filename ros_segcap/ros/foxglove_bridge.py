"""Stream the camera image, the overlay, the mask and the caption to a Foxglove websocket.

For viewing without RViz: `segcap demo --serve` starts a foxglove-sdk server on 127.0.0.1
and prints the URL to open in Foxglove (app or browser). The bridge owns its own foxglove
Context, so two bridges in one process do not share channels.
"""
from __future__ import annotations

from typing import Any, Callable

import foxglove
from foxglove.channels import RawImageChannel
from foxglove.messages import RawImage, Timestamp
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

DEFAULT_IMAGE_TOPICS = ('image', 'segcap/overlay', 'segcap/mask')
DEFAULT_TEXT_TOPICS = ('segcap/caption',)
TEXT_SCHEMA = {
    'type': 'object',
    'title': 'std_msgs/String',
    'properties': {'data': {'type': 'string'}},
}


def to_raw_image(msg: Image) -> RawImage:
    """Convert a sensor_msgs/Image to Foxglove's RawImage (same encoding, one copy)."""
    stamp = msg.header.stamp
    return RawImage(timestamp=Timestamp(stamp.sec, stamp.nanosec),
                    frame_id=msg.header.frame_id, width=msg.width, height=msg.height,
                    encoding=msg.encoding, step=msg.step, data=bytes(msg.data))


class FoxgloveBridge:
    """Subscribes on `node` to image and text topics and logs them to a websocket server.

    Image topics are read best effort (that matches reliable and best-effort publishers);
    text topics reliably. Foxglove channel names are the resolved ROS topic names.
    """

    def __init__(self, node: Node, *, host: str = '127.0.0.1', port: int = 8765,
                 image_topics: tuple[str, ...] = DEFAULT_IMAGE_TOPICS,
                 text_topics: tuple[str, ...] = DEFAULT_TEXT_TOPICS) -> None:
        self._node = node
        self._context = foxglove.Context()
        self._server = foxglove.start_server(name='ros_segcap', host=host, port=port,
                                             context=self._context)
        self.host = host
        self.messages = 0
        self._subs: list[Any] = []
        for topic in image_topics:
            self._subscribe_image(topic)
        for topic in text_topics:
            self._subscribe_text(topic)

    @property
    def port(self) -> int:
        """The port the server listens on (useful with port=0)."""
        return int(self._server.port)

    @property
    def ws_url(self) -> str:
        """The websocket address to enter in Foxglove's 'Open connection' dialog."""
        return f'ws://{self.host}:{self.port}'

    @property
    def app_url(self) -> str:
        """A link that opens Foxglove connected to this server."""
        return str(self._server.app_url())

    def _subscribe_image(self, topic: str) -> None:
        name = self._node.resolve_topic_name(topic)
        channel = RawImageChannel(name, context=self._context)
        self._subs.append(self._node.create_subscription(
            Image, name, self._forward(lambda msg: channel.log(to_raw_image(msg))),
            qos_profile_sensor_data))

    def _subscribe_text(self, topic: str) -> None:
        name = self._node.resolve_topic_name(topic)
        channel = foxglove.Channel(name, schema=TEXT_SCHEMA, message_encoding='json',
                                   context=self._context)
        self._subs.append(self._node.create_subscription(
            String, name, self._forward(lambda msg: channel.log({'data': msg.data})),
            QoSProfile(depth=10)))

    def _forward(self, log: Callable[[Any], None]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            log(msg)
            self.messages += 1
        return callback

    def close(self) -> None:
        """Stop the server and drop the subscriptions."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs.clear()
        self._server.stop()


def serve(node: Node, *, host: str = '127.0.0.1', port: int = 8765) -> FoxgloveBridge:
    """Start a bridge with the default topics and print where to connect."""
    bridge = FoxgloveBridge(node, host=host, port=port)
    print(f'Foxglove: open {bridge.app_url}\n'
          f'          or connect Foxglove (app or browser) to {bridge.ws_url}; panels: Image on '
          '/segcap/overlay, /segcap/mask and /image, Raw Messages on /segcap/caption', flush=True)
    return bridge
