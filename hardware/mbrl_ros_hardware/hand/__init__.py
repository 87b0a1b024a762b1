"""The Shadow hand's drivers.

``sim`` (executable ``sim_hand``): the MuJoCo hand of gymnasium-robotics
(``shadow_hand``). ``real`` (executable ``real_hand``) bridges to the vendor
driver (joint_states in, JointTrajectory out); ``emulator`` (executable
``hand_emulator``) plays that vendor driver on the MuJoCo hand for tests.
"""
