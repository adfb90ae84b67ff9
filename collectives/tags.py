"""The tag space every message of a communicator is numbered in.

Collectives tag their messages with their sequence number; the library's own messages
(the connect barrier, the exchange that opens a shared window) set ``CONTROL_TAG_BIT`` on
top, and point-to-point messages carry the user's tag under ``P2P_TAG_BIT``, so that the
three never match each other's receives.
"""

from __future__ import annotations

P2P_TAG_BIT = 1 << 62
CONTROL_TAG_BIT = 1 << 61
MAX_USER_TAG = (1 << 31) - 1
