"""collectives: collective communication for Python (all-reduce and friends).

    import collectives
    comm = collectives.init()          # under collectives-run, torchrun, or alone
    comm.all_reduce(x)                 # x: numpy array or torch tensor, in place
"""

from ._init import init, join
from .communicator import Communicator
from .config import Config
from .errors import (
    CollectiveMismatchError,
    CollectivesError,
    CollectiveTimeoutError,
    CommunicatorBrokenError,
    CommunicatorClosedError,
    CommunicatorRevokedError,
    InvalidArgumentError,
    InvalidTypeError,
    PeerLostError,
    SettingsMismatchError,
    RankDeclaredFailedError,
    TransportError,
    UnsupportedError,
)
from .mpi import from_mpi
from .ops import ReduceOp
from . import _version
from .recovery import Agreement
from .work import Work

__version__ = _version.__version__

__all__ = [
    "CollectiveMismatchError",
    "Agreement",
    "CollectiveTimeoutError",
    "CollectivesError",
    "Communicator",
    "CommunicatorBrokenError",
    "CommunicatorClosedError",
    "CommunicatorRevokedError",
    "Config",
    "InvalidArgumentError",
    "InvalidTypeError",
    "PeerLostError",
    "RankDeclaredFailedError",
    "ReduceOp",
    "SettingsMismatchError",
    "TransportError",
    "UnsupportedError",
    "Work",
    "from_mpi",
    "init",
    "join",
]
