"""Run the real ragcli CLI with every network attempt logged and refused (the no-telemetry test).

A Python audit hook sees each socket connect, sendto and DNS lookup made through Python (requests,
urllib3, httpx, posthog, huggingface_hub, ...): it appends the attempt to $RAGCLI_NET_LOG and raises.
Local (AF_UNIX) sockets are allowed. The test also runs this inside a network namespace when the
machine allows it (``unshare -rn``), which cuts native code off as well.
"""

import json
import os
import socket
import sys

LOG = os.environ["RAGCLI_NET_LOG"]
EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
          "socket.gethostbyname", "socket.gethostbyaddr"}


def guard(event: str, args: tuple) -> None:  # type: ignore[type-arg]
    if event not in EVENTS:
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg") and \
            getattr(args[0], "family", None) == socket.AF_UNIX:
        return
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "args": repr(args[1:])[:300]}) + "\n")
    raise OSError(f"network access blocked by the no-telemetry test: {event}")


sys.addaudithook(guard)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:  # the control: the guard does see a plain connection
        try:
            socket.create_connection(("example.com", 80), timeout=2)
        except OSError:
            pass
        sys.exit(0)
    from ragcli.cli.app import main

    sys.argv[0] = "ragcli"
    main()
