"""Thin rclpy adapters over the ROS-free core: the only package that imports rclpy or messages.

Names and QoS shared by every node live in `interfaces.py`.
"""
