"""The real Shadow hand: a bridge to the vendor driver (``node``, executable ``real_hand``) and an
emulator of that driver on the MuJoCo hand (``emulator``, executable ``hand_emulator``)."""
