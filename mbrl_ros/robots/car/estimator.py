"""The car's model state ``[x, y, yaw, v, steer]`` from odometry and the commands sent (``CarStateEstimator``),
with the lateral velocity and yaw rate appended (``[..., v_y, yaw_rate]``, ``DYNAMIC_STATE_NAMES``) for a
task whose dynamics depend on them (the race: tyre slip).

ROS-free (numpy only): the estimator node feeds it message fields, tests feed it
numbers. What it adds to the raw odometry:

- yaw from the orientation quaternion, wrapped to (-pi, pi];
- the steering angle, which odometry does not carry: the commanded steering
  ``steer_gain * u_steer`` passed through a first-order actuator lag
  (``steer_lag`` seconds; ``steer_lag <= dt`` means the command is reached
  within one control period, as in ``KinematicBicycle``) whose rate is
  limited to ``steer_rate_limit`` rad/s (0: no limit; a real steering servo
  has one), integrated exactly over the intervals between odometry stamps
  during which each command held;
- an optional low-pass on the speed (``speed_filter_alpha``, 1.0 = none);
- with ``DYNAMIC_STATE_NAMES``, the twist's lateral velocity (``twist.linear.y``, body frame, m/s) and
  yaw rate (``twist.angular.z``, rad/s) as measured: the slip a kinematic state cannot show.

Bad sensor data never raises: ``update`` returns a ``Rejection`` with a reason
(non-finite field, degenerate quaternion, out-of-order or duplicate stamp) and
leaves the filter state untouched, and the rejections are counted.

A duplicate stamp is most often an identical re-send (the lockstep simulator
re-publishes an unanswered state, because the first messages after discovery
can be lost); such a rejection carries the estimate it repeats
(``Rejection.repeat_of``) so the node can re-send it downstream too, and a
lockstep loop whose state got lost on the estimator's output cannot stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from mbrl_ros.core.angles import yaw_from_quaternion
from mbrl_ros.core.estimation import Rejection, StateEstimate, TimeLineEstimator, finite

STATE_NAMES = ("x", "y", "yaw", "v", "steer")
# The kinematic state plus what a dynamic (slipping) car needs: the twist's lateral velocity and yaw rate.
# Appended, so every index of the kinematic state (the bicycle, the stop, the costs) stays where it was.
DYNAMIC_STATE_NAMES = STATE_NAMES + ("v_y", "yaw_rate")
STATE_LAYOUTS = (STATE_NAMES, DYNAMIC_STATE_NAMES)
STEER_COMMAND = "u_steer"
# Commands kept while no odometry comes (each waits for the sample after it): 20 s at 5 Hz,
# 2 s at 50 Hz. Beyond that the oldest is folded into the command in effect (dropped_commands).
MAX_PENDING_COMMANDS = 100


@dataclass(frozen=True)
class EstimatorConfig:
    steer_gain: float = 0.7853981633974483  # rad per unit u_steer: highway-env's 45 deg
    steer_lag: float = 0.0  # s, first-order time constant of the steering actuator
    steer_rate_limit: float = 0.0  # rad/s, largest steering rate of the actuator; 0 = no limit
    dt: float = 0.2  # s, the control period; a lag up to it is treated as instant
    speed_filter_alpha: float = 1.0  # weight of the newest speed sample; 1.0 = no filter
    # Consecutive out-of-order samples after which the estimator assumes a new
    # time line (a restarted simulator, a bag replayed from the start) and
    # starts over from the next sample; 0 = never.
    resync_after: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"estimator: '{f.name}' must be a finite number, got {value!r}")
        if self.steer_lag < 0:
            raise ValueError(f"estimator: 'steer_lag' must be >= 0 s, got {self.steer_lag}")
        if self.steer_rate_limit < 0:
            raise ValueError(f"estimator: 'steer_rate_limit' must be >= 0 rad/s, got {self.steer_rate_limit}")
        if self.dt <= 0:
            raise ValueError(f"estimator: 'dt' must be > 0 s, got {self.dt}")
        if not 0.0 < self.speed_filter_alpha <= 1.0:
            raise ValueError(f"estimator: 'speed_filter_alpha' must be in (0, 1], got {self.speed_filter_alpha}")
        if self.resync_after < 0 or int(self.resync_after) != self.resync_after:
            raise ValueError(f"estimator: 'resync_after' must be an integer >= 0, got {self.resync_after}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "estimator") -> "EstimatorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)


@dataclass
class _Command:
    stamp_ns: int
    u_steer: float


@dataclass
class CarStateEstimator(TimeLineEstimator):
    """``wait_for_command`` (lockstep simulation): the simulator steps only on the command that answers a
    state, so the next odometry sample follows that command; but the command reaches this estimator over its
    own connection, and on a loaded machine the sample can come first (its steering would then be one command
    stale, in the state the controller plans from and the logger records). An odometry sample that comes before
    any command answering the last sample is held until one does (``held_for_command``); a re-send of it or a
    later sample releases it without one (``released_without_command``, never seen in lockstep but bounded).
    On a robot (real time) odometry comes at its own rate, so nothing is held."""

    config: EstimatorConfig = field(default_factory=EstimatorConfig)
    state_names: tuple[str, ...] = STATE_NAMES  # one of STATE_LAYOUTS
    wait_for_command: bool = False

    def __post_init__(self) -> None:
        self.state_names = tuple(self.state_names)
        if self.state_names not in STATE_LAYOUTS:
            raise ValueError(f"estimator: state_names {list(self.state_names)} are none of the car's layouts "
                             f"{[list(layout) for layout in STATE_LAYOUTS]}")
        self.dropped_commands = 0  # folded away while odometry was missing (MAX_PENDING_COMMANDS)
        self.held_for_command = self.released_without_command = 0
        self.episode_restarts = 0  # simulated episode ends taken in (episode_ended)
        self._held: tuple | None = None  # wait_for_command: the update() arguments of a held sample
        TimeLineEstimator.__init__(self, self.config.resync_after)

    def counters(self) -> dict[str, int]:
        """The time line's counters and the samples held for a command and released without (lockstep)."""
        return {**super().counters(), "held_for_command": self.held_for_command,
                "released_without_command": self.released_without_command, "episode_restarts": self.episode_restarts}

    def reset(self) -> None:
        """Forget the filter state and the time line (counters are kept)."""
        super().reset()
        self._steer = 0.0
        self._speed = 0.0
        self._u_steer = 0.0  # the command in effect since the last accepted sample
        self._pending: list[_Command] = []  # commands received since then
        self._latest_command_ns = -1  # the latest stamp of the commands received on this time line
        self._restart_ns: int | None = None  # a simulated episode's restart not yet taken in (``episode_ended``)
        self._episode_end_ns = -1  # the latest episode end taken in on this time line (``episode_ended``)

    def episode_ended(self, end_stamp_ns: int) -> None:
        """A simulated episode ended at ``end_stamp_ns`` (its ``sim/episodes`` report): the simulator restarts
        the car with its steering straight, and the next episode's states are stamped from there on.

        The steering is estimated from the commands alone, so without this the new episode would start
        from the old one's last steering angle; with a rate-limited servo and a sampling planner's
        alternating commands that offset lasts (both ramp alike): on the race it was 0.1-0.2 rad for
        seconds, a 20 m/s car the controller believed to turn left went right and left the track. The first
        sample stamped at or after ``end_stamp_ns`` starts from straight steering; a report that comes
        after that sample (DDS does not order topics) sets the steering straight at once.

        A report of an end already taken in (or of an earlier one) changes nothing: the same report again
        (the data_logger repeats a latched topic's last message at the start of every bag it splits to, and
        a replay of those bags publishes it again, seconds into the next episode) is no second restart."""
        if not finite(end_stamp_ns):
            return
        end_stamp_ns = int(end_stamp_ns)
        if end_stamp_ns <= self._episode_end_ns:
            return
        self._episode_end_ns = end_stamp_ns
        last = self._last
        self.episode_restarts += 1
        if last is not None and last.stamp_ns >= end_stamp_ns:  # late: its first sample was taken in
            self._steer, self._u_steer = 0.0, 0.0
            self._pending = [c for c in self._pending if c.stamp_ns >= end_stamp_ns]
            return
        self._restart_ns = end_stamp_ns

    def resync(self) -> None:
        """A new time line keeps the commands received: they answer its samples."""
        pending = self._pending
        self.reset()
        self._pending = pending
        self._latest_command_ns = max((c.stamp_ns for c in pending), default=-1)

    @property
    def pending_commands(self) -> int:
        """Commands received that no odometry sample has taken in yet."""
        return len(self._pending)

    # ---- inputs ---------------------------------------------------------------------
    def command(self, stamp_ns: int, u_steer: float) -> StateEstimate | Rejection | None:
        """Record a steering command sent at (or planned for the state stamped) ``stamp_ns``; with
        ``wait_for_command``, the estimate of the sample it releases."""
        if not finite(stamp_ns, u_steer):
            return self._reject(f"command: non-finite field (stamp {stamp_ns}, u_steer {u_steer})")
        self._latest_command_ns = max(self._latest_command_ns, int(stamp_ns))
        # Drivers saturate at the contract's [-1, 1]; so does the actuator.
        self._pending.append(_Command(int(stamp_ns), min(1.0, max(-1.0, float(u_steer)))))
        if len(self._pending) > MAX_PENDING_COMMANDS:
            # Odometry has been missing for a while: the oldest command becomes the one in effect
            # since the last sample (its exact timing is lost, the list stays bounded).
            self._pending.sort(key=lambda c: c.stamp_ns)
            self._u_steer = self._pending.pop(0).u_steer
            self.dropped_commands += 1
        if self._held is not None and not self._awaits_command(int(self._held[0])):
            held, self._held = self._held, None
            return self._update(*held)
        return None

    def update(
        self,
        stamp_ns: int,
        x: float,
        y: float,
        orientation: tuple[float, float, float, float],
        speed: float,
        lateral_speed: float = 0.0,
        yaw_rate: float = 0.0,
    ) -> StateEstimate | Rejection | list[StateEstimate | Rejection] | None:
        """One odometry sample (``orientation`` as ``(qx, qy, qz, qw)``; ``speed`` and ``lateral_speed``
        in the body frame, ``yaw_rate`` about z) -> the model state; with ``wait_for_command``, None while
        it is held, or a list when it releases a held sample first."""
        sample = (stamp_ns, x, y, orientation, speed, lateral_speed, yaw_rate)
        if not self.wait_for_command:
            return self._update(*sample)
        outs = []
        if self._held is not None:
            held, self._held = self._held, None
            self.released_without_command += 1
            outs.append(self._update(*held))
            if held[0] == stamp_ns:  # the simulator re-sent the held sample: its estimate answers it
                return outs[0]
        if finite(stamp_ns) and self._awaits_command(int(stamp_ns)):
            self._held = sample
            self.held_for_command += 1
        else:
            outs.append(self._update(*sample))
        return outs[0] if len(outs) == 1 else (outs or None)

    def _awaits_command(self, stamp_ns: int) -> bool:
        """Whether a sample at ``stamp_ns`` would come before any command answering the last sample."""
        last = self._last
        return last is not None and stamp_ns > last.stamp_ns and self._latest_command_ns < last.stamp_ns

    def _update(self, stamp_ns, x, y, orientation, speed, lateral_speed, yaw_rate) -> StateEstimate | Rejection:
        qx, qy, qz, qw = orientation
        sample = (x, y, qx, qy, qz, qw, speed, lateral_speed, yaw_rate)
        if not finite(stamp_ns, *sample):
            names = ("stamp", "x", "y", "qx", "qy", "qz", "qw", "speed", "lateral_speed", "yaw_rate")
            bad = [n for n, v in zip(names, (stamp_ns, *sample)) if not finite(v)]
            return self._reject(f"odometry: non-finite {', '.join(bad)}")
        if stamp_ns < 0:
            return self._reject(f"odometry: negative stamp {stamp_ns} ns")
        if qx * qx + qy * qy + qz * qz + qw * qw < 1e-12:
            return self._reject("odometry: zero-length orientation quaternion")
        stamp_ns = int(stamp_ns)
        rejection = self._order(stamp_ns, sample, "odometry")
        if rejection is not None:
            return rejection
        last = self._last  # None on a new time line
        from_ns = None if last is None else last.stamp_ns
        if self._restart_ns is not None and stamp_ns >= self._restart_ns:
            # The first sample of a new simulated episode: straight steering from its start, the old
            # episode's commands (stamped before it) spent.
            self._steer, self._u_steer = 0.0, 0.0
            self._pending = [c for c in self._pending if c.stamp_ns >= self._restart_ns]
            from_ns = self._restart_ns
            self._restart_ns = None

        steer = self._propagate_steer(from_ns, stamp_ns)
        alpha = self.config.speed_filter_alpha
        speed = float(speed) if last is None else alpha * float(speed) + (1.0 - alpha) * self._speed
        yaw = yaw_from_quaternion(qx, qy, qz, qw)
        values = [float(x), float(y), yaw, speed, steer]
        if self.state_names == DYNAMIC_STATE_NAMES:
            values += [float(lateral_speed), float(yaw_rate)]
        out = self._accept(StateEstimate(stamp_ns, np.array(values), self.state_names), sample)
        if isinstance(out, StateEstimate):
            self._steer, self._speed = steer, speed
        return out

    # ---- internals -------------------------------------------------------------------
    def _propagate_steer(self, from_ns: int | None, to_ns: int) -> float:
        """The steering angle at ``to_ns``, given the commands received since ``from_ns``."""
        # A command acts from the stamp of the state it answers: one stamped at or after this
        # sample has not acted yet, even if it arrived first (a logger or replay can deliver a
        # command before the odometry it answers), so it waits for the next sample.
        pending = sorted(self._pending, key=lambda c: c.stamp_ns)
        commands = [c for c in pending if c.stamp_ns < to_ns]
        self._pending = [c for c in pending if c.stamp_ns >= to_ns]
        gain, lag, limit = self.config.steer_gain, self.config.steer_lag, self.config.steer_rate_limit
        if commands:
            latest = commands[-1].u_steer
        else:
            latest = self._u_steer
        if from_ns is None or (lag <= self.config.dt and not limit):
            # Instant actuator, or no history: the last command received holds.
            # (Before any command, the car is assumed to steer straight.)
            self._u_steer = latest
            return gain * latest
        steer, u, t = self._steer, self._u_steer, from_ns
        for command in commands:
            # A command acts from its stamp (the state it answers), but not
            # before the last sample (its effect then is already measured) nor
            # after this one (it was received, so it is in effect).
            start = min(max(command.stamp_ns, from_ns), to_ns)
            steer = _actuator(steer, gain * u, (start - t) * 1e-9, lag, limit)
            u, t = command.u_steer, start
        self._u_steer = u
        return _actuator(steer, gain * u, (to_ns - t) * 1e-9, lag, limit)



def _actuator(value: float, target: float, duration_s: float, lag_s: float, rate_limit: float) -> float:
    """Exact response of ``dv/dt = clip((target - v) / lag, -rate_limit, rate_limit)`` after
    ``duration_s`` seconds (``rate_limit`` 0: no limit; ``lag`` 0: the limit alone)."""
    if duration_s <= 0.0:
        return value
    gap = target - value
    if rate_limit > 0.0:
        # Far from the target the rate is at its limit (a ramp) until the gap shrinks to
        # rate_limit * lag, where the lag's own rate falls below the limit.
        ramp = abs(gap) - rate_limit * lag_s
        if ramp > 0.0:
            if duration_s * rate_limit <= ramp:
                return value + math.copysign(duration_s * rate_limit, gap)
            value += math.copysign(ramp, gap)
            duration_s -= ramp / rate_limit
    if lag_s <= 0.0:
        return target
    return target + (value - target) * math.exp(-duration_s / lag_s)


