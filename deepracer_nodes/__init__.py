"""deepracer_nodes: drive an AWS DeepRacer (and cars like it) with a trained policy on ROS 2."""

__version__ = '0.1.0'
