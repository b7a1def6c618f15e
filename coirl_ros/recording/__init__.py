"""Recording without ROS: pairing step records with observations, the store session, driver progress."""
