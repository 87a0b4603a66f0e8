"""The thin ROS 2 layer; only this package imports rclpy and messages (core never does).

segcap_node is a lifecycle node (SegCapNode in segcap_node.py; node.py is the process: signals,
spinning, an orderly stop): configure loads the model, activate subscribes and serves
(launch/segcap.launch.py drives both; autostart:=true makes the node do it itself).
All names are relative to the node's namespace and remappable:

  subscribes  image              sensor_msgs/Image (rgb8 bgr8 rgba8 bgra8 mono8 mono16 16UC1),
                                 sensor-data QoS unless image_qos says otherwise
              image/compressed   sensor_msgs/CompressedImage (jpeg/png) instead, compressed:=true
              command            std_msgs/String, reliable
              image_mouse_left   geometry_msgs/PointStamped (pixels): point prompt, next command
              segcap/prompt      ros_segcap_msgs/VisualPrompt: held, or run at once with text
  publishes   segcap/result      ros_segcap_msgs/SegCapResult (segcap/result_json, a JSON
                                 std_msgs/String, when ros_segcap_msgs is not built)
              segcap/mask        mono8 labels, 0 = background, i + 1 = mask i (panoptic
                                 and tracking results: each object's id)
              segcap/overlay     rgb8 overlay (publish_overlay)
              segcap/caption     std_msgs/String, the answer
              /diagnostics       rates, per-stage latency, queue depth, dropped commands
  serves      segcap/segment         ros_segcap_msgs/srv/Segment
              segcap/segment_stream  ros_segcap_msgs/action/Segment (feedback: text so far)

Parameters: core/options.py (the table), declared by params.py; the serving loop: worker.py
(no ROS); outputs: publish.py; Image <-> numpy: convert.py; result/prompt glue: messages.py.
Statuses: 'ok', 'no image yet', 'dropped: queue full', 'cancelled', 'cancelled: the node is
stopping ...', 'bad input: ...', 'error: ...'.
"""
