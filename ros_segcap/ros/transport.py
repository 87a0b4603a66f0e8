"""Large frames across processes: the DDS profile every process sets, and frames lost.

Fast DDS's default shared-memory segment (512 KiB) is smaller than one 640x480 rgb8 frame,
so best-effort frames between two processes with default settings are mostly lost. Each
entry point of the package that publishes or subscribes images (camera, record, play, the
node, the demo) calls use_large_frame_transport() before rclpy.init; it points Fast DDS at
config/fastdds_shm.xml (a 64 MiB segment) unless the user chose a profile or another RMW.

A subscriber cannot fix a publisher's transport, so the node and the recorder also estimate
the frames lost on the way from the cadence of the header stamps (DropMeter) and say what to
set when too many are. Standard library only: no ROS import.
"""
from __future__ import annotations

import os
import struct
import sys
import threading
from collections import deque
from pathlib import Path
from typing import MutableMapping, Optional

PACKAGE = 'ros_segcap'
PROFILE = 'config/fastdds_shm.xml'
PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
CWD_PROFILES = ('DEFAULT_FASTDDS_PROFILES.xml', 'DEFAULT_FASTRTPS_PROFILES.xml')
FAST_DDS_RMWS = ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
PAUSE_S = 2.0  # a longer gap between stamps is a paused source, not lost frames
WARMUP = 10  # intervals seen before the cadence (and so any loss) is estimated
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # a checkout (or pip -e install)


def find_share_file(relative: str) -> Optional[Path]:
    """Find config/ or launch/ files in the source tree, share/ros_segcap or the ament index.

    The ament index covers colcon installs (install/ros_segcap/share/ros_segcap, found
    through AMENT_PREFIX_PATH); sys.prefix covers pip installs into a venv.
    """
    for root in (SOURCE_ROOT, Path(sys.prefix) / 'share' / PACKAGE):
        if (root / relative).is_file():
            return root / relative
    try:
        from ament_index_python.packages import get_package_share_directory
        path = Path(get_package_share_directory(PACKAGE)) / relative
    except (ImportError, LookupError, OSError, ValueError):
        return None
    return path if path.is_file() else None


def user_transport(env: MutableMapping[str, str], cwd: Optional[Path] = None) -> str:
    """Return what the user set for the DDS transport ('' = nothing: ours may be used)."""
    for name in PROFILE_VARS:
        if env.get(name):
            return f'{name}={env[name]}'
    rmw = env.get('RMW_IMPLEMENTATION', '')
    if rmw and rmw not in FAST_DDS_RMWS:
        return f'RMW_IMPLEMENTATION={rmw}'
    for name in CWD_PROFILES:  # Fast DDS also loads these from the working directory
        if (Path.cwd() if cwd is None else cwd).joinpath(name).is_file():
            return f'./{name}'
    return ''


def use_large_frame_transport(env: Optional[MutableMapping[str, str]] = None) -> str:
    """Point Fast DDS at config/fastdds_shm.xml unless the user set a transport already.

    Call it first thing in an entry point, before rclpy.init (Fast DDS reads the variable
    when the first participant is made). `env` defaults to os.environ. Return the profile
    path set, or '' when something the user set is left alone (or the file is missing).
    """
    env = os.environ if env is None else env
    if user_transport(env):
        return ''
    path = find_share_file(PROFILE)
    if path is None:
        return ''
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(path)
    return str(path)


def transport_fix(compressed: str = 'compressed:=true') -> str:
    """Say what a publisher of large frames should set (the fix in the loss warnings)."""
    path = find_share_file(PROFILE) or PROFILE
    return (f'large frames need a bigger DDS transport in the publisher (the camera driver) '
            f'too: start it with FASTDDS_DEFAULT_PROFILES_FILE={path} (Fast DDS), or use '
            f'image_transport compressed images ({compressed})')


def header_stamp_ns(raw: bytes) -> Optional[int]:
    """Read header.stamp (ns) of a serialized message whose first field is a std_msgs Header.

    CDR: 4 bytes of encapsulation (an odd second byte means little endian), then int32 sec
    and uint32 nanosec. None when `raw` is too short.
    """
    if len(raw) < 12:
        return None
    sec, nanosec = struct.unpack('<iI' if raw[1] & 1 else '>iI', raw[4:12])
    return sec * 1_000_000_000 + nanosec


class DropMeter:
    """Frames lost on the way, estimated from the header stamps of the frames that arrive.

    The source's period is the median of the shortest intervals between successive stamps
    (those within 1.5x of the 5th percentile of the last `window`); an interval of k periods
    means k - 1 frames lost. A gap over PAUSE_S is a paused source, and a stamp that goes
    back (a replayed bag loops, say) starts again from it; neither counts. Losing exactly
    every other frame looks like a source at half the rate (real losses are not so regular).
    Thread-safe.
    """

    def __init__(self, window: int = 150) -> None:
        self._lock = threading.Lock()
        self._last: Optional[int] = None
        self._gaps: deque[int] = deque(maxlen=window)  # recent intervals between stamps (ns)
        self._recent: deque[int] = deque(maxlen=window)  # frames lost in each recent interval
        self._early: list[int] = []  # intervals seen before the period was known
        self.received = 0
        self.lost = 0

    def add(self, stamp_ns: int) -> None:
        """Count one received frame with this header stamp."""
        with self._lock:
            self.received += 1
            last, self._last = self._last, stamp_ns
            if last is None or not 0 < stamp_ns - last <= PAUSE_S * 1e9:
                return
            self._gaps.append(stamp_ns - last)
            self._early.append(stamp_ns - last)
            period = self._period()
            if period is None:
                return
            for gap in self._early:
                missing = max(0, round(gap / period) - 1)
                self.lost += missing
                self._recent.append(missing)
            self._early = []

    def _period(self) -> Optional[float]:
        if len(self._gaps) < WARMUP:
            return None
        ordered = sorted(self._gaps)
        low = ordered[len(ordered) // 20]
        near = [gap for gap in ordered if gap <= 1.5 * low]
        return float(near[len(near) // 2])

    @property
    def expected(self) -> int:
        """Frames the source sent between the first and the last one received (estimate)."""
        return self.received + self.lost

    @property
    def known(self) -> bool:
        """True once enough stamps came to estimate the source's cadence."""
        with self._lock:
            return self._period() is not None

    def percent(self) -> float:
        """Frames lost over the whole run, in percent of those expected."""
        with self._lock:
            return 100.0 * self.lost / max(self.received + self.lost, 1)

    def recent_percent(self) -> float:
        """Frames lost over the last `window` intervals, in percent (0 until known)."""
        with self._lock:
            lost = sum(self._recent)
            return 100.0 * lost / max(len(self._recent) + lost, 1)

    def source_hz(self) -> float:
        """The source's frame rate from its stamps (0 until known)."""
        with self._lock:
            period = self._period()
        return 1e9 / period if period else 0.0
