"""Run the operator: ``python -m kubeswarm_operator [--namespace NS ...]``.

Out of a cluster it uses the current KUBECONFIG context; in a pod, its
service account.  Settings come from ``KUBESWARM_*`` environment variables
(see :mod:`kubeswarm_operator.settings`); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio.sslproto
import logging
import sys

from .settings import OperatorSettings

# kopf imports these client libraries when they are installed, only to recognise their model
# objects; the operator uses none of them (kubernetes_asyncio's generated models alone take
# some 70 MiB).  Marked absent before kopf is imported, kopf skips them.
UNUSED_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")


def without_unused_clients() -> None:
    for name in UNUSED_CLIENTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


# asyncio reads each TLS connection's bytes into a buffer of its own, 256 KiB, allocated and zeroed when it opens:
# with its 100 pooled connections to the API server the operator held 25 MiB in them. API answers come in TLS
# records of at most 16 KiB, so a quarter of that costs no extra reads of any account.
TLS_READ_BUFFER = 64 * 1024


def smaller_tls_buffers() -> None:
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def main(argv: list[str] | None = None) -> int:
    without_unused_clients()
    smaller_tls_buffers()
    import kopf

    from .wiring import handlers  # noqa: F401  (registers the handlers)

    parser = argparse.ArgumentParser(prog="python -m kubeswarm_operator", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n", "--namespace", action="append", default=None, help="watch only this namespace (repeatable; default: the whole cluster)"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="port of /metrics (0: off)")
    parser.add_argument("--health-port", type=int, default=None, help="port of /healthz (0: off)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {"namespaces": args.namespace, "metrics_port": args.metrics_port, "health_port": args.health_port}.items()
        if value is not None
    }
    settings = OperatorSettings(**overrides)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kopf logs every handled watch event at INFO: thousands of lines a minute with many Agents.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        standalone=True,
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
