"""collectives: collective communication for Python (all-reduce and friends).

    import collectives
    comm = collectives.init()          # under collectives-run, torchrun, or alone
    comm.all_reduce(x)                 # x: numpy array or torch tensor, in place
"""

from ._init import init, join
from .communicator import Communicator
from .config import Config
from .errors import (
    CollectivesError,
    CollectiveTimeoutError,
    CommunicatorBrokenError,
    CommunicatorClosedError,
    CommunicatorRevokedError,
    InvalidArgumentError,
    InvalidTypeError,
    PeerLostError,
    RankDeclaredFailedError,
    TransportError,
    UnsupportedError,
)
from .mpi import from_mpi
from .ops import ReduceOp
from .recovery import Agreement
from .work import Work

__version__ = "0.1.0"

__all__ = [
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
    "TransportError",
    "UnsupportedError",
    "Work",
    "from_mpi",
    "init",
    "join",
]
