"""ros_segcap: segment and caption camera frames from plain-language commands."""
