"""Sensor ingestion without ROS: joint-state mapping and checks, camera sources, image layouts."""
