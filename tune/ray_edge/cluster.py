"""Joining a Ray cluster (``--address``): which cluster ``auto`` means, and whether a Ray answers
at an address, found out in seconds instead of Ray's 14 minutes.

Measured on Ray 2.60:

- ``ray.init(address=HOST:PORT)`` retries 20 times, about 14 minutes, before it raises where
  nothing listens, where something that is not Ray listens, and where the GCS refuses the token.
  `check` asks first, a few seconds at most: a TCP connection, then the GCS's own
  ``NodeInfoGcsService.GetClusterId`` call through Ray's own gRPC channel (which carries the
  token exactly as ``ray.init`` would). Its answer tells the three apart: connection refused,
  a gRPC status other than OK, ``UNAUTHENTICATED`` (``InvalidAuthToken``).
- ``ray.init(address="auto")`` takes the cluster the last ``ray start`` recorded in
  ``/tmp/ray/ray_current_cluster``, else the first raylet it finds on the host: on a shared host,
  possibly someone else's. `resolve` lists the GCS addresses of every raylet on the host
  (Ray's own ``find_gcs_addresses``) and refuses more than one, naming them.

Both need Ray imported, so they run after the token settings are in the environment
(`tune.ray_edge.environment.token_auth_for_address`), and before anything is written.
"""

from __future__ import annotations

import socket
from typing import Any

from trainable.errors import InputError

TIMEOUT_S = 3.0  # for the TCP connection and for the GCS's answer, each


def resolve(address: str, flag: str) -> str:
    """``address`` as ``ray.init`` should get it: ``auto`` becomes the one Ray cluster running on
    this machine; several, or none, are refused with the addresses found."""
    import os

    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):  # what Ray itself takes for "auto"
        return os.environ["RAY_ADDRESS"]
    from ray._private import services

    # A cache of the processes seen before (Ray sets the attribute on its function).
    services.find_gcs_addresses.cache_clear()  # type: ignore[attr-defined]
    found = sorted(str(a) for a in services.find_gcs_addresses())
    if not found:
        raise InputError(f"{flag} auto: no Ray runs on this machine; start one with `ray start "
                         "--head` (docs/clusters.md) or name a cluster: --address HOST:PORT")
    if len(found) > 1:
        raise InputError(f"{flag} auto: {len(found)} Ray clusters run on this machine "
                         f"({', '.join(found)}), and `auto` could join any of them; name one: "
                         "--address HOST:PORT")
    return found[0]


def check(address: str, flag: str, token_file: str | None) -> None:
    """Refuse an address where no Ray GCS answers, in at most twice ``TIMEOUT_S``: one line that
    names the address and what failed (nothing listening, not a Ray GCS, token refused). A Ray
    Client address (``ray://``) is left to Ray."""
    if "://" in address:
        return
    host, port = _host_port(address, flag)
    where = f"{flag} {address}"
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
    except ConnectionRefusedError:
        raise InputError(f"{where}: nothing listens there (connection refused); the head's "
                         "address is the one `ray start --head` printed (port 6379 unless "
                         "--port says otherwise)") from None
    except TimeoutError:
        raise InputError(f"{where}: no answer within {TIMEOUT_S:g} s (no such host on the "
                         "network, or a firewall drops the connection)") from None
    except OSError as e:  # no route, a name that does not resolve, ...
        raise InputError(f"{where}: cannot connect ({e.strerror or e})") from None
    _ask_gcs(address, where, token_file)


def _ask_gcs(address: str, where: str, token_file: str | None) -> None:
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from ray.exceptions import AuthenticationError

    try:
        channel = init_grpc_channel(address)
    except AuthenticationError:  # token mode without a readable token
        raise InputError(f"--ray-token-file {token_file}: no token in that file") from None
    request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(request,
                                                                          timeout=TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - grpc.RpcError: its status says what answered
        code, details = _status(e)
        if code == "UNAUTHENTICATED":
            sent = (f"the token in {token_file}" if token_file else "no token (none is sent "
                    "unless you pass --ray-token-file with the head's ~/.ray/auth_token)")
            raise InputError(f"{where}: the Ray cluster there refused the connection: it uses "
                             f"token auth, and this driver sent {sent}") from None
        first = details.splitlines()[0] if details else code
        raise InputError(f"{where}: something listens there, but it is not a Ray GCS ({first}); "
                         "the head's address is the one `ray start --head` printed") from None
    finally:
        channel.close()


def _status(e: Any) -> tuple[str, str]:
    """A gRPC error's status code name and details (grpc ships no type information)."""
    if callable(getattr(e, "code", None)) and callable(getattr(e, "details", None)):
        return str(e.code().name), str(e.details() or "").strip()
    return type(e).__name__, str(e).strip()


def _host_port(address: str, flag: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{flag} {address}: not an address; use HOST:PORT (the head's "
                         "address that `ray start --head` printed) or auto")
    return host.strip("[]"), int(port)
