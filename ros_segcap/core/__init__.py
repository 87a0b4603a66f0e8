"""The model core: pure Python, numpy and torch. Never imports rclpy or ROS messages."""
