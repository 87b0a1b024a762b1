"""How a stop travels on ``hw/command``: a CommandVector whose header.frame_id is ``STOP_FRAME_ID``.

The controller marks every command its robot's stop produced (e-stop, stale state,
deactivation, shutdown, ...). The values are the stop's own command in the action
space, so a driver that applies the action space directly (sim_car, the hand) needs
nothing else; a driver that tracks a speed (real_car) commands speed zero when it
sees the mark, since a braking acceleration integrated by the bridge would not land
on zero exactly. frame_id is otherwise unused in a CommandVector (the stamp says
which state it answers), so the mark costs no interface change.
"""

from __future__ import annotations

STOP_FRAME_ID = "stop"


def is_stop(msg) -> bool:
    """Whether the CommandVector ``msg`` is the controller's stop."""
    return msg.header.frame_id == STOP_FRAME_ID
