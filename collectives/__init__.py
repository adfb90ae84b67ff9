"""collectives: collective communication for Python (all-reduce and friends).

    import collectives
    comm = collectives.init()          # under collectives-run, torchrun, or alone
    comm.all_reduce(x)                 # x: numpy array or torch tensor, in place
"""

from ._init import init
from .communicator import Communicator
from .config import Config
from .errors import (
    CollectivesError,
    CollectiveTimeoutError,
    CommunicatorBrokenError,
    CommunicatorClosedError,
    InvalidArgumentError,
    InvalidTypeError,
    PeerLostError,
    TransportError,
    UnsupportedError,
)
from .mpi import from_mpi
from .ops import ReduceOp
from .work import Work

__version__ = "0.1.0"

__all__ = [
    "CollectiveTimeoutError",
    "CollectivesError",
    "Communicator",
    "CommunicatorBrokenError",
    "CommunicatorClosedError",
    "Config",
    "InvalidArgumentError",
    "InvalidTypeError",
    "PeerLostError",
    "ReduceOp",
    "TransportError",
    "UnsupportedError",
    "Work",
    "from_mpi",
    "init",
]
