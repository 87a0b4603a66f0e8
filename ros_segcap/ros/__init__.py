"""The thin ROS 2 layer: segcap_node (node.py), Image <-> numpy (convert.py), message glue.

Only this package imports rclpy and message packages; ros_segcap.core never does.
"""
