"""The simulated Shadow hand: gymnasium-robotics' MuJoCo hand tasks (``hand``) and its driver node (``node``)."""
