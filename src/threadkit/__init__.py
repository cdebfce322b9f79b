"""Typed thread orchestration: cancellation, thread groups, fan-out and supervised daemons."""

from ._cancel import Cancelled as Cancelled
from ._cancel import CancelToken as CancelToken
from ._cancel import check_cancelled as check_cancelled
from ._cancel import current_token as current_token
from ._cancel import sleep as sleep
from ._daemon import PeriodicStatistics as PeriodicStatistics
from ._daemon import PeriodicThread as PeriodicThread
from ._daemon import handle_signals as handle_signals
from ._daemon import shutdown_daemons as shutdown_daemons
from ._daemon import spawn_daemon as spawn_daemon
from ._fanout import FanOutError as FanOutError
from ._fanout import fan_out as fan_out
from ._fanout import fan_out_and_join as fan_out_and_join
from ._group import ThreadGroup as ThreadGroup
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import ChildStatistics as ChildStatistics
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._thread import ManagedThread as ManagedThread
from ._thread import ThreadState as ThreadState
from ._version import __version__ as __version__

__all__ = [
    "CancelToken",
    "Cancelled",
    "ChildSpec",
    "ChildStatistics",
    "FanOutError",
    "ManagedThread",
    "PeriodicStatistics",
    "PeriodicThread",
    "Supervisor",
    "SupervisorStatistics",
    "ThreadGroup",
    "ThreadState",
    "__version__",
    "check_cancelled",
    "current_token",
    "fan_out",
    "fan_out_and_join",
    "handle_signals",
    "shutdown_daemons",
    "sleep",
    "spawn_daemon",
]
